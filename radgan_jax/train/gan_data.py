"""Which GAN dataset a training run reads, building it once when the config points at raw data.

`data.path` may be (a) a GAN dataset folder written by `data_convert target=tfds` (or one `<name>_<R>px`
inside it): used as is; (b) any dataset the data layer reads (image folder, RadImageNet, HyperKvasir,
CVC-ClinicDB, ...): converted once into `WORKDIR/data/tfds` at the stage's resolution, then reused on every
restart. `data.builtin='phantoms'` first writes the built-in phantom image folder into `WORKDIR/data`.
Only process 0 writes; the others wait at a barrier, then read the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from radgan_jax.data.base import DataError
from radgan_jax.data.pipeline import GanDatasetInfo, make_gan_source


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _is_gan_dataset(path: Path, resolution: int) -> bool:
    try:
        make_gan_source(path, resolution)
        return True
    except DataError:
        return False


def _convert(raw: Path, out: Path, data_cfg: Any, resolution: int, xflip: bool) -> None:
    from radgan_jax.jobs import data_convert

    cfg = ml_collections.ConfigDict(dict(
        dataset=str(raw), format=data_cfg.format, reader_options=data_cfg.reader_options, target="tfds",
        max_cases=0, progress=True, quarantine=False, quarantine_dir="", dataset_id=500, dataset_name="",
        resize="0", slices=False, file_ending="auto", channel_names="", split="imagesTr", overwrite=False,
        resolutions=str(resolution), product=data_cfg.product, xflip=bool(xflip), modality=data_cfg.modality,
        window=data_cfg.window))
    data_convert.run(cfg, str(out))


def resolve_gan_dataset(config: Any, workdir: str | Path) -> tuple[Path, GanDatasetInfo]:
    """(dataset folder for GanInputPipeline, its info) for `config.model.resolution`; builds it if needed."""
    res = int(config.model.resolution)
    data_cfg = config.data
    data_root = Path(workdir) / "data"
    built = data_root / "tfds"
    if data_cfg.builtin:
        if data_cfg.builtin != "phantoms":
            raise ValueError(f"data.builtin={data_cfg.builtin!r}: the only built-in dataset is 'phantoms'")
        raw = data_root / "phantoms"
        if jax.process_index() == 0 and not (raw / ".complete").exists():
            from radgan_jax.data import phantoms

            kinds = [k.strip() for k in str(data_cfg.builtin_kinds).split(",") if k.strip()]
            logging.info("writing the built-in phantom dataset (%s, %d per class) to %s", kinds,
                         data_cfg.builtin_per_class, raw)
            phantoms.write_image_folder(raw, kinds, int(data_cfg.builtin_per_class), max(res, 64), seed=0)
            (raw / ".complete").touch()
        _sync("phantoms_written")
    elif data_cfg.path:
        raw = Path(data_cfg.path)
        if not raw.exists():
            raise DataError(raw, "data.path does not exist", "layout")
        if _is_gan_dataset(raw, res):
            _, info = make_gan_source(raw, res)
            return raw, info
    else:
        raise ValueError("set --config.data.path=DIR (a GAN dataset or any dataset the data layer reads) or "
                         "--config.data.builtin=phantoms")
    if jax.process_index() == 0 and not _is_gan_dataset(built, res):
        logging.info("converting %s into the %d px GAN dataset under %s (once; reused on restart)", raw, res, built)
        _convert(raw, data_root, data_cfg, res, xflip=False)
    _sync("gan_dataset_built")  # every process, whatever it saw on disk: no process can skip the barrier
    _, info = make_gan_source(built, res)
    return built, info


def check_classes(info: GanDatasetInfo, c_dim: int) -> tuple[bool, tuple[int, ...] | None]:
    """(dataset is unconditional, label counts). An unconditional dataset trains as one class (c_dim 1)."""
    n = len(info.class_names)
    if n == 0:
        if c_dim != 1:
            raise ValueError(f"{info.path}: the dataset has no class labels, so train it as one class with "
                             f"--config.model.c_dim=1 (the config says {c_dim})")
        return True, (info.num_records,)
    if n != c_dim:
        raise ValueError(f"{info.path}: the dataset has {n} classes ({', '.join(info.class_names[:5])}...) but "
                         f"model.c_dim is {c_dim}; set --config.model.c_dim={n} or convert with the right product")
    return False, info.label_counts
