"""`mode=interpret_sample`: the labeled-data factory (configs/interpret/sample.py).

    python -m radgan_jax.main --config=configs/interpret/sample.py --workdir=OUT \
        --config.checkpoint=GEN --config.interpreters=I1[,I2,...] --config.classes=0,3 --config.num_per_class=M

Writes under OUT (a filesystem every host sees):
    factory.json                         the run's identity; a rerun with other settings is refused
    nnunet_raw/DatasetXXX_Name/          imagesTr/<case>_0000.png, labelsTr/<case>.png, dataset.json
    tfds/<name>_<R>px/1.0.0/             TFDS ArrayRecord dataset: image, mask, label (class), id, uncertainty
    overlays/<case>_image.png, _overlay.png   samples 0..overlays_per_class-1 of every class
    grid_<class>.png                     per class: an image row above an overlay row
    uncertainty/chunk-XXXXXX.jsonl       per sample {case, class, index, uncertainty} (ensemble JSD score)
    filter.json, filtered_out/           ensemble filter: thresholds, dropped cases (files moved, same rel. paths)
    chunks/chunk-XXXXXX.done             a chunk's commit record (its case ids, in order)
    factory_done.json                    written last: counts and where everything is
Case ids: `class003_000042` = sample 42 of class 3 (`interpret.factory.case_id`). The latent rule, chunking (one
class per chunk) and why the bytes do not depend on devices or hosts: `radgan_jax/interpret/factory.py`.

Chunks: every host renders its own chunks (round-robin) on its own devices and writes their files into
`chunks/chunk-XXXXXX.partial/` (nnU-Net files through `data.nnunet_raw.NnUNetRawWriter`, one ArrayRecord shard,
overlays, the jsonl), then moves them into place and writes the `.done` record last (write + rename): a killed run
leaves at most one unfinished chunk per host, which the rerun renders again (same bytes) and overwrites. Memory is
bounded by one chunk. After all hosts finish (a barrier), process 0 finalises: applies the filter, writes
dataset.json (numTraining = cases present), assembles the TFDS dataset from the per-host shards (one shard per
chunk, renamed to TFDS's names; shards with dropped samples are rewritten without them) and the grids. Finalising
keeps one score and id per sample in memory when filtering, nothing per sample otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from absl import logging
from PIL import Image
from tqdm import tqdm

from radgan_jax.data.base import Case
from radgan_jax.data.nnunet_raw import NnUNetRawWriter, dataset_folder_name
from radgan_jax.data.tfds_build import DeterministicSerializer, assemble_array_record_shards, labeled_pair_features
from radgan_jax.data.tfds_build import dataset_name as tfds_dataset_name
from radgan_jax.eval.grids import image_grid, save_png
from radgan_jax.interpret import factory
from radgan_jax.interpret.annotate import generator_digest
from radgan_jax.interpret.features import feature_groups
from radgan_jax.interpret.model_io import check_generator, load_interpreter
from radgan_jax.interpret.uncertainty import select_most_uncertain
from radgan_jax.jobs.generate import load_model, product_class_table, requested_class_labels
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.models.stylegan_xl.sampling import to_uint8
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.seg.export import overlay
from radgan_jax.tools.files import write_json_atomic

FORMAT = "radgan_jax.interpret_sample/1"
FORMATS = ("nnunet", "tfds")
SPLIT = "train"


class _Spec:
    """Adapter so `annotate.generator_digest` (spec JSON + every variable) also identifies an interpreter."""

    def __init__(self, meta: dict):
        self.meta = meta

    def to_dict(self) -> dict:
        return self.meta


def _load_interpreters(config, spec, digest: str) -> tuple[list, list, dict[str, int], list[str], bool]:
    """(modules, variables, labels, interpreter digests, include_input) of `config.interpreters`, each checked
    against the generator (digest, feature shapes) and against the first (labels)."""
    dirs = [d.strip() for d in str(config.interpreters).split(",") if d.strip()]
    if not dirs:
        raise ValueError("interpret_sample: set --config.interpreters=DIR[,DIR...] (trained interpreter checkpoints)")
    models, variables, digests, first = [], [], [], None
    for d in dirs:
        model, v, meta = load_interpreter(d)
        check_generator(meta, digest, where=f"interpreter {d}")
        groups = feature_groups(spec, include_input=meta.include_input)
        want = {g.name: [g.resolution, g.resolution, g.channels] for g in groups}
        if meta.feature_shapes != want:
            raise ValueError(f"interpreter {d} was built for features {meta.feature_shapes}, but this generator "
                             f"gives {want}")
        if first is not None and (meta.labels != first.labels or meta.include_input != first.include_input):
            raise ValueError(f"interpreter {d}: labels {meta.labels} / include_input {meta.include_input} differ from "
                             f"{dirs[0]}'s ({first.labels} / {first.include_input}); an ensemble needs one task")
        first = first or meta
        models.append(model)
        variables.append(v)
        digests.append(generator_digest(_Spec(meta.to_dict()), v))
    return models, variables, dict(first.labels), digests, first.include_input


def _classes(config, spec) -> tuple[list[int], list[str]]:
    """(class indices to render, names of all generator classes)."""
    if not spec.c_dim:
        return [0], ["uncond"]
    classes = requested_class_labels(config, spec)
    if not classes:
        raise ValueError("interpret_sample: set --config.classes (e.g. '0,3' or class labels of the product)")
    table = product_class_table(config, spec)
    names = [table.classes[k].label for k in range(spec.c_dim)] if table is not None else [
        f"class{k:03d}" for k in range(spec.c_dim)]
    return classes, names


class _Layout:
    def __init__(self, workdir: str, config, resolution: int):
        self.root = Path(workdir)
        self.chunks = self.root / "chunks"
        self.nnunet_root = self.root / "nnunet_raw"
        self.nnunet = self.nnunet_root / dataset_folder_name(int(config.dataset_id), str(config.dataset_name))
        self.tfds_name = tfds_dataset_name(str(config.dataset_name), resolution)
        self.tfds_chunks = self.root / "tfds" / ".chunks"
        self.tfds = self.root / "tfds" / self.tfds_name
        self.overlays = self.root / "overlays"
        self.uncertainty = self.root / "uncertainty"
        self.filtered = self.root / "filtered_out"
        self.done_file = self.root / "factory_done.json"

    def done(self, j: int) -> Path:
        return self.chunks / f"chunk-{j:06d}.done"

    def stage(self, j: int) -> Path:
        return self.chunks / f"chunk-{j:06d}.partial"


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


class _ChunkWriter:
    """Writes one rendered chunk into its staging folder, then commits it (moves + the .done record)."""

    def __init__(self, ctx: dict):
        self.ctx = ctx

    def write(self, j: int, classes: np.ndarray, indices: np.ndarray, out: factory.Labeled) -> None:
        ctx, lay = self.ctx, self.ctx["layout"]
        stage = lay.stage(j)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        grey = ctx["grayscale"]
        u8 = to_uint8(out.images.mean(axis=-1) if grey else out.images)
        ids = [factory.case_id(k, i, ctx["conditional"]) for k, i in zip(classes, indices, strict=True)]
        moves: list[tuple[Path, Path]] = []
        pngs: list[tuple[Path, Path] | None] = [None] * len(ids)
        if "nnunet" in ctx["formats"]:
            w = NnUNetRawWriter(stage / "nnunet", int(ctx["config"].dataset_id), str(ctx["config"].dataset_name),
                                ctx["labels"], ctx["channel_names"], file_ending=".png")
            for n, (cid, img, mask) in enumerate(zip(ids, u8, out.masks, strict=True)):
                written = w.add(Case(cid, img, mask))  # [image png, mask png]
                pngs[n] = (written[0], written[-1])
                moves += [(p, lay.nnunet / p.parent.name / p.name) for p in written]
        if "tfds" in ctx["formats"]:
            from array_record.python.array_record_module import ArrayRecordWriter

            shard = stage / "shard.array_record"
            aw = ArrayRecordWriter(str(shard), "group_size:1")
            for cid, k, img, mask, s, png in zip(ids, classes, u8, out.masks, out.uncertainty, pngs, strict=True):
                # the nnU-Net files' PNG bytes when written (the same encoding), else encoded here
                image_b, mask_b = (png[0].read_bytes(), png[1].read_bytes()) if png else (_png_bytes(img),
                                                                                        _png_bytes(mask))
                aw.write(ctx["serialize"]({"image": image_b, "mask": mask_b, "label": int(k), "id": cid,
                                           "uncertainty": np.float32(s)}))
            aw.close()
            moves.append((shard, lay.tfds_chunks / f"chunk-{j:06d}.array_record"))
        n_ov = int(ctx["config"].overlays_per_class)
        for cid, i, img, mask in zip(ids, indices, u8, out.masks, strict=True):
            if i < n_ov:
                for suffix, pic in (("image", img), ("overlay", overlay(img, mask))):
                    p = stage / f"{cid}_{suffix}.png"
                    save_png(p, pic)
                    moves.append((p, lay.overlays / p.name))
        jl = stage / "uncertainty.jsonl"
        jl.write_text("".join(json.dumps({"case": c, "class": int(k), "index": int(i), "uncertainty": float(s)}) + "\n"
                              for c, k, i, s in zip(ids, classes, indices, out.uncertainty, strict=True)))
        moves.append((jl, lay.uncertainty / f"chunk-{j:06d}.jsonl"))
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        write_json_atomic(lay.done(j), {"chunk": j, "cases": ids})
        shutil.rmtree(stage, ignore_errors=True)


def _wait(pending: tuple, done_n: int, bar, on_chunk: Callable[[int], None] | None) -> int:
    """Waits for a submitted chunk write (re-raising its error); progress and callback count written pairs."""
    future, n = pending
    future.result()
    bar.update(n)
    if on_chunk is not None:
        on_chunk(done_n + n)
    return done_n + n


def _check_identity(lay: _Layout, identity: dict) -> None:
    path = lay.root / "factory.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        if diff:
            raise ValueError(f"{path}: this workdir holds a factory run with other settings ({', '.join(diff)}: "
                             f"{ {k: old.get(k) for k in diff} } there vs { {k: identity.get(k) for k in diff} } now); "
                             "use a new --workdir, or delete the old one")
    elif jax.process_index() == 0:
        write_json_atomic(path, identity)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def sample_dataset(config, workdir: str, *, devices: list | None = None,
                   on_chunk: Callable[[int], None] | None = None) -> dict | None:
    """Runs the factory (see the module docstring); returns the summary on process 0 once finalised, else None.
    `devices`: this host's devices to use (default: `config.num_devices` of `jax.local_devices()`); `on_chunk(n)`
    is called with this host's count of finished samples after every chunk (benchmarks sample memory there)."""
    formats = tuple(f.strip() for f in str(config.formats).split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"interpret_sample: formats {list(formats)}: choose from {FORMATS}")
    if str(config.filter_scope) not in ("class", "all"):
        raise ValueError(f"interpret_sample: filter_scope must be 'class' or 'all', got {config.filter_scope!r}")
    spec, gen_vars, source = load_model(config)
    digest = generator_digest(spec, gen_vars)
    models, interp_vars, labels, interp_digests, include_input = _load_interpreters(config, spec, digest)
    if float(config.filter_fraction) and len(models) < 2:
        raise ValueError("interpret_sample: filter_fraction needs an ensemble (>= 2 interpreters): one interpreter "
                         "has no disagreement to measure")
    classes, class_names = _classes(config, spec)
    plan = factory.SamplePlan(tuple(classes), int(config.num_per_class), int(config.chunk_size))
    pdb = int(config.per_device_batch)
    if pdb < 1 or plan.chunk_size % pdb:
        raise ValueError(f"interpret_sample: chunk_size {plan.chunk_size} must be a multiple of per_device_batch "
                         f"{pdb} (each sample keeps its batch group: radgan_jax/interpret/factory.py)")
    grey = bool(config.grayscale) or spec.img_channels == 1
    names = [n.strip() for n in str(config.channel_names).split(",") if n.strip()] or (
        ["gray"] if grey else ["R", "G", "B"])
    res = spec.img_resolution
    lay = _Layout(workdir, config, res)
    cutoff = None if int(config.truncation_cutoff) < 0 else int(config.truncation_cutoff)
    identity = {
        "format": FORMAT, "seed": int(config.seed), "classes": list(classes), "num_per_class": plan.num_per_class,
        "chunk_size": plan.chunk_size, "per_device_batch": int(config.per_device_batch),
        "truncation_psi": float(config.truncation_psi), "truncation_cutoff": cutoff,
        "compute_dtype": str(config.compute_dtype), "generator_digest": digest,
        "interpreter_digests": interp_digests, "labels": labels, "formats": list(formats), "grayscale": grey,
        "channel_names": names, "dataset_id": int(config.dataset_id), "dataset_name": str(config.dataset_name),
        "filter_fraction": float(config.filter_fraction), "filter_scope": str(config.filter_scope),
        "overlays_per_class": int(config.overlays_per_class)}
    _check_identity(lay, identity)
    if lay.done_file.is_file():
        logging.info("interpret_sample: %s is complete already", workdir)
        return json.loads(lay.done_file.read_text()) if jax.process_index() == 0 else None

    if devices is None:
        devices = jax.local_devices()
        devices = devices[:int(config.num_devices)] if int(config.num_devices) > 0 else devices
    mesh = make_mesh(config.mesh, devices)
    gen = Generator(spec, compute_dtype=config.compute_dtype)
    groups = feature_groups(spec, include_input=include_input)
    render = factory.Renderer(gen, gen_vars, models, interp_vars, groups, mesh, psi=float(config.truncation_psi),
                              cutoff=cutoff, per_device_batch=pdb)
    ctx = dict(config=config, layout=lay, formats=formats, labels=labels, grayscale=grey, conditional=bool(spec.c_dim),
               channel_names={str(i): n for i, n in enumerate(names)})
    if "tfds" in formats:
        ctx["features"] = labeled_pair_features(res, res, 1 if grey else spec.img_channels, class_names)
        ctx["serialize"] = DeterministicSerializer(ctx["features"])
    writer = _ChunkWriter(ctx)
    pid, count = jax.process_index(), jax.process_count()
    mine = plan.host_chunks(pid, count)
    todo = [j for j in mine if not lay.done(j).is_file()]
    done_n = sum(len(plan.chunk_rows(j)[0]) for j in mine if j not in todo)
    logging.info("interpret_sample: %s (%s), %d interpreter(s), %d classes x %d = %d samples in %d chunks; host %d "
                 "of %d: %d chunks left, %d devices", source, digest, len(models), len(classes), plan.num_per_class,
                 plan.num_samples, plan.num_chunks, pid, count, len(todo), len(devices))
    bar = tqdm(total=plan.host_samples(pid, count), initial=done_n, unit="pair", desc="labeled pairs",
               disable=not config.progress or pid != 0)
    limit = int(config.max_chunks)
    todo = todo if limit < 0 else todo[:limit]
    # One writer thread: chunk j's files are written while chunk j + 1 renders (at most two chunks in memory;
    # PNG/zlib encoding releases the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="interpret_sample_writer") as pool:
        pending = None
        for j in todo:
            ks, idx, n_real = plan.render_rows(j, pdb)
            out = render(factory.latents(int(config.seed), ks, idx, spec.z_dim), ks)
            out = factory.Labeled(out.images[:n_real], out.masks[:n_real], out.uncertainty[:n_real])
            if pending is not None:
                done_n = _wait(pending, done_n, bar, on_chunk)
            pending = (pool.submit(writer.write, j, ks[:n_real], idx[:n_real], out), n_real)
        if pending is not None:
            done_n = _wait(pending, done_n, bar, on_chunk)
    bar.close()
    if 0 <= limit < len(mine) and any(not lay.done(j).is_file() for j in mine):
        logging.info("interpret_sample: host %d stopped after %d chunks (max_chunks); rerun to continue", pid, limit)
    _barrier("interpret_sample/chunks")  # every host gets here, also one stopped by max_chunks
    summary = _finalize(ctx, plan, class_names, identity, source) if pid == 0 else None
    _barrier("interpret_sample/final")
    return summary


def _finalize(ctx: dict, plan: factory.SamplePlan, class_names: list[str], identity: dict, source: str
              ) -> dict | None:
    config, lay = ctx["config"], ctx["layout"]
    missing = [j for j in range(plan.num_chunks) if not lay.done(j).is_file()]
    if missing:  # only max_chunks gets here (a failed host never reaches the barrier)
        logging.info("interpret_sample: %d of %d chunks still to render; rerun to continue", len(missing),
                     plan.num_chunks)
        return None
    for stale in lay.chunks.glob("*.partial"):  # staging left by a kill between a chunk's commit and cleanup
        shutil.rmtree(stale, ignore_errors=True)
    dropped: set[str] = set()
    if float(config.filter_fraction) > 0:
        dropped = _apply_filter(ctx, plan)
    if "nnunet" in ctx["formats"]:
        # The writer's close() writes dataset.json (numTraining = cases in imagesTr now). Opened on the (empty)
        # imagesTs split so that it neither refuses nor clears the imagesTr written chunk by chunk.
        NnUNetRawWriter(lay.nnunet_root, int(config.dataset_id), str(config.dataset_name), ctx["labels"],
                        ctx["channel_names"], file_ending=".png", split="imagesTs").close()
    if "tfds" in ctx["formats"]:
        _assemble_tfds(ctx, plan, dropped, class_names, identity)
    grids = _grids(ctx, plan, class_names)
    summary = {"num_samples": plan.num_samples, "num_dropped": len(dropped),
               "num_written": plan.num_samples - len(dropped), "classes": list(plan.classes),
               "nnunet": str(lay.nnunet.relative_to(lay.root)) if "nnunet" in ctx["formats"] else None,
               "tfds": str((lay.tfds / "1.0.0").relative_to(lay.root)) if "tfds" in ctx["formats"] else None,
               "grids": grids, "generator_source": source, "identity": identity}
    write_json_atomic(lay.done_file, summary)
    logging.info("interpret_sample: %d labeled pairs written (%d filtered out) to %s", summary["num_written"],
                 len(dropped), lay.root)
    return summary


def _apply_filter(ctx: dict, plan: factory.SamplePlan) -> set[str]:
    config, lay = ctx["config"], ctx["layout"]
    ids, scores, groups = [], [], []
    for j in range(plan.num_chunks):
        for line in (lay.uncertainty / f"chunk-{j:06d}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            ids.append(rec["case"])
            scores.append(rec["uncertainty"])
            groups.append(f"class{rec['class']:03d}")
    scope = str(config.filter_scope)
    res = select_most_uncertain(np.asarray(scores), ids, float(config.filter_fraction),
                                groups if scope == "class" else None)
    dropped = sorted(c for c, d in zip(ids, res.drop, strict=True) if d)
    write_json_atomic(lay.root / "filter.json", {
        "rule": "DatasetGAN: per-pixel Jensen-Shannon divergence of the ensemble, mean of the top 10% pixels; the "
                "most uncertain fraction dropped (score descending, ties by case id)",
        "fraction": float(config.filter_fraction), "scope": scope, "thresholds": res.thresholds,
        "num_dropped": res.num_dropped, "dropped": dropped})
    if "nnunet" in ctx["formats"]:
        for cid in dropped:
            for p in (lay.nnunet / "imagesTr" / f"{cid}_0000.png", lay.nnunet / "labelsTr" / f"{cid}.png"):
                dst = lay.filtered / p.relative_to(lay.root)
                if p.is_file():  # idempotent: a rerun of an interrupted finalisation skips moved files
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(p, dst)
    return set(dropped)


def _assemble_tfds(ctx: dict, plan: factory.SamplePlan, dropped: set[str], class_names: list[str],
                   identity: dict) -> None:
    """The per-chunk ArrayRecord shards (written by their hosts) -> one TFDS dataset, filtered samples left out."""
    lay = ctx["layout"]
    partial = lay.tfds.with_name(f".{lay.tfds.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(lay.tfds, ignore_errors=True)  # a finalisation interrupted after its rename
    shards, count = [], 0
    for j in range(plan.num_chunks):
        ids = json.loads(lay.done(j).read_text())["cases"]
        keep = [i for i, c in enumerate(ids) if c not in dropped]
        shards.append((lay.tfds_chunks / f"chunk-{j:06d}.array_record", None if len(keep) == len(ids) else keep))
        count += len(keep)
    meta = {"format": "radgan_interpret_dataset", "labels": ctx["labels"], "class_names": class_names,
            "num_records": count,
            **{k: identity[k] for k in ("seed", "num_per_class", "truncation_psi", "generator_digest",
                                        "interpreter_digests")}}
    lengths = assemble_array_record_shards(
        partial / "1.0.0", lay.tfds_name, shards, ctx["features"], meta,
        f"Synthetic labeled pairs (radgan_jax interpret_sample). Labels {json.dumps(ctx['labels'])}.")
    if sum(lengths) != meta["num_records"]:
        raise RuntimeError(f"{lay.tfds_chunks}: the shards hold {sum(lengths)} records, the done records say "
                           f"{meta['num_records']}")
    partial.rename(lay.tfds)


def _grids(ctx: dict, plan: factory.SamplePlan, class_names: list[str]) -> list[str]:
    """Per class: the first `overlays_per_class` images in a row above their overlays."""
    lay, n = ctx["layout"], int(ctx["config"].overlays_per_class)
    out = []
    for k in plan.classes:
        ids = [factory.case_id(k, i, ctx["conditional"]) for i in range(min(n, plan.num_per_class))]
        if not ids:
            continue
        rows = []
        for suffix in ("image", "overlay"):
            for cid in ids:
                a = np.asarray(Image.open(lay.overlays / f"{cid}_{suffix}.png").convert("RGB"))
                rows.append(a)
        name = f"grid_{class_names[k]}.png"
        save_png(lay.root / name, image_grid(np.stack(rows), grid_w=len(ids)))
        out.append(name)
    return out


def run(config, workdir: str) -> None:
    sample_dataset(config, workdir)
