"""Issue 7 acceptance 3, end to end through the jobs: interpret_export -> masks filled by program in all three
formats (index PNG, colour PNG, NIfTI) -> interpret_train on the folder -> interpret_sample with the trained
interpreter -> an nnU-Net raw dataset with the annotation's label map that our integrity check accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from radgan_jax.checkpoint import save_generator
from radgan_jax.interpret import mask_formats as mf
from radgan_jax.interpret.annotate import RESERVED_JSON
from radgan_jax.interpret.model_io import load_interpreter
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from tests.interpret.test_annotate import LABELS, _export_config, _mask


def _config(repo_root: Path, name: str, **kw):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, repo_root / f"configs/interpret/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(kw)
    return config


def test_export_annotate_import_train_sample(tmp_path: Path, repo_root: Path):
    from radgan_jax.data.verify import verify_dataset
    from radgan_jax.jobs import interpret_export, interpret_sample, interpret_train

    spec, variables = builtin_generator("demo32", jax.random.key(11))
    save_generator(tmp_path / "gen", jax.device_get(variables), spec)
    gen = str(tmp_path / "gen")
    interpret_export.run(_export_config(repo_root, checkpoint=gen), str(tmp_path / "export"))
    folder = tmp_path / "export" / "annotation"
    names = sorted(p.stem for p in folder.glob("*.json") if p.name not in RESERVED_JSON)
    assert len(names) == 6
    colors = mf.label_colors(LABELS)
    writers = [lambda p, m: mf.write_index_png(p + "_mask.png", m),
               lambda p, m: mf.write_color_png(p + "_color.png", m, colors),
               lambda p, m: mf.write_nifti_mask(p + "_mask.nii.gz", m)]
    for i, n in enumerate(names):  # two images per format
        writers[i % 3](str(folder / n), _mask(i))

    train_cfg = _config(repo_root, "train", checkpoint=gen, annotations=str(folder), labels="liver,kidney",
                        epochs=3, batch_size=2, widths="8,8,8", num_previews=2, progress=False)
    train_cfg.mesh.data, train_cfg.mesh.tensor = 2, -1  # the tests run on 8 simulated devices
    interpret_train.run(train_cfg, str(tmp_path / "train"))
    _, _, meta = load_interpreter(tmp_path / "train" / "interpreter")
    assert meta.labels == LABELS and meta.num_outputs == 3
    log = [json.loads(line) for line in (tmp_path / "train" / "training_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(r["loss"]) for r in log if "loss" in r)

    sample_cfg = _config(repo_root, "sample", checkpoint=gen, interpreters=str(tmp_path / "train" / "interpreter"),
                         classes="0,2", num_per_class=4, chunk_size=4, per_device_batch=2, formats="nnunet",
                         overlays_per_class=2, progress=False, num_devices=1)
    interpret_sample.run(sample_cfg, str(tmp_path / "sample"))
    ds = next((tmp_path / "sample" / "nnunet_raw").glob("Dataset*"))
    dataset = json.loads((ds / "dataset.json").read_text())
    assert dataset["labels"] == LABELS and dataset["numTraining"] == 8
    masks = [np.asarray(Image.open(p)) for p in sorted((ds / "labelsTr").glob("*.png"))]
    assert len(masks) == 8 and all(m.shape == (32, 32) and set(np.unique(m)) <= {0, 1, 2} for m in masks)
    report = verify_dataset(ds)
    assert not report.problems, report.problems
