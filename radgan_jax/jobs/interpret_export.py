"""`mode=interpret_export`: synthetic images for annotators, each with a sidecar and an empty mask template.

    python -m radgan_jax.main --config=configs/interpret/export.py --workdir=OUT \
        --config.checkpoint=GEN --config.classes=0,3 --config.num_per_class=25 --config.labels=liver,kidney

writes OUT/annotation/ (layout: radgan_jax/interpret/annotate.py): per image NAME.png, NAME.json (seed, class,
psi, z, ws, generator digest, size), NAME_mask.png (all zeros), and labels.json, legend.png/.json,
itksnap_labels.txt, README.txt. Image j (0-based, classes in the given order, `num_per_class` each) uses seed
`config.seed + j` with gen_images.py's meaning, so `generate --config.seeds=S --config.classes=K` shows the same
image. Latents are mapped (with truncation) and the stored ws synthesized batch-wise over the mesh, so the PNG is
exactly what the sidecar's ws re-synthesizes. Masks already in the folder are never overwritten.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from radgan_jax.interpret import annotate
from radgan_jax.interpret import mask_formats as mf
from radgan_jax.jobs.generate import load_model, product_class_table, requested_class_labels
from radgan_jax.models.stylegan_xl.generator import Generator, GeneratorSpec
from radgan_jax.models.stylegan_xl.sampling import one_hot, to_uint8, z_from_seed
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import (
    batch_sharding,
    global_from_host,
    host_from_global,
    pad_to_multiple,
    replicate_tree,
    replicated,
)


def _batched(fn, variables: Any, mesh, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
    """fn(variables, *batch) over fixed-size batches (last one padded by repeating its last row), as numpy."""
    n = len(arrays[0])
    batch = pad_to_multiple(max(1, min(batch_size, n)), mesh)
    out = []
    for s in range(0, n, batch):
        parts = [a[s:s + batch] for a in arrays]
        pad = batch - len(parts[0])
        if pad:
            parts = [np.concatenate([p, np.repeat(p[-1:], pad, 0)]) for p in parts]
        res = fn(variables, *[global_from_host(mesh, p) for p in parts])
        out.append(host_from_global(res)[: batch - pad])
    return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _map_fn(gen: Generator, mesh, psi: float, cutoff: int | None):
    bs2, bs3 = batch_sharding(mesh, 2), batch_sharding(mesh, 3)

    @functools.partial(jax.jit, in_shardings=(replicated(mesh), bs2, bs2), out_shardings=bs3)
    def fn(v, zb, cb):
        return gen.apply(v, zb, cb, truncation_psi=psi, truncation_cutoff=cutoff, method=Generator.map)

    return fn


@functools.lru_cache(maxsize=8)
def _synthesis_fn(gen: Generator, mesh):
    bs3, bs4 = batch_sharding(mesh, 3), batch_sharding(mesh, 4)

    @functools.partial(jax.jit, in_shardings=(replicated(mesh), bs3), out_shardings=bs4)
    def fn(v, wb):
        return gen.apply(v, wb, method=Generator.synthesize)

    return fn


def map_latents(gen: Generator, variables: Any, mesh, z: np.ndarray, c: np.ndarray, *, psi: float,
                cutoff: int | None, batch_size: int) -> np.ndarray:
    """ws [N, num_ws, w_dim] (truncated) of latents z [N, z_dim] and one-hot c [N, c_dim], batch-sharded.
    (The jitted functions are cached per generator/mesh/psi: a second export in one process compiles nothing.)"""
    return _batched(_map_fn(gen, mesh, float(psi), cutoff), variables, mesh, [z, c], batch_size)


def synthesize_ws(gen: Generator, variables: Any, mesh, ws: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Images NHWC float32 of ws [N, num_ws, w_dim] (no input transform, as the interpreter's features)."""
    return _batched(_synthesis_fn(gen, mesh), variables, mesh, [ws], batch_size)


def export_rows(config, spec: GeneratorSpec) -> list[tuple[int, int, str]]:
    """(seed, class index, class name) of every image to export, in order."""
    n = int(config.num_per_class)
    if n < 1:
        raise ValueError(f"interpret_export: num_per_class must be >= 1, got {n}")
    if spec.c_dim:
        classes = requested_class_labels(config, spec)
        if not classes:
            raise ValueError("interpret_export: set --config.classes (e.g. '0,3' or class labels of the product)")
        table = product_class_table(config, spec)  # the paper's labels for ctmr / gastro generators, else None
        names = {c: (table.classes[c].label if table is not None else f"class{c:03d}") for c in classes}
    else:
        classes, names = [0], {0: "uncond"}
    seeds = int(config.seed) + np.arange(len(classes) * n)
    return [(int(seeds[k * n + i]), c, names[c]) for k, c in enumerate(classes) for i in range(n)]


def export_annotation_set(config, spec: GeneratorSpec, variables: Any, out_dir: str, source: str = "") -> list[str]:
    """Renders and writes the annotation folder `out_dir`; returns the image names."""
    labels = annotate.parse_labels(config.labels)
    rows = export_rows(config, spec)
    mesh = make_mesh(config.mesh)
    gen = Generator(spec, compute_dtype=config.compute_dtype)
    cutoff = None if int(config.truncation_cutoff) < 0 else int(config.truncation_cutoff)
    psi = float(config.truncation_psi)
    digest = annotate.generator_digest(spec, variables)
    logging.info("interpret_export: %d images from %s (%s), %dpx, psi %.3f", len(rows), source or "generator",
                 digest, spec.img_resolution, psi)

    z = np.concatenate([z_from_seed(s, spec.z_dim) for s, _, _ in rows])
    c = one_hot([k for _, k, _ in rows], spec.c_dim) if spec.c_dim else np.zeros((len(rows), 0), np.float32)
    replicated_vars = replicate_tree(mesh, variables)
    bs = int(config.batch_size)
    ws = map_latents(gen, replicated_vars, mesh, z, c, psi=psi, cutoff=cutoff, batch_size=bs).astype(np.float32)
    images = synthesize_ws(gen, replicated_vars, mesh, ws, batch_size=bs)
    grayscale = bool(config.grayscale) or spec.img_channels == 1
    u8 = to_uint8(images.mean(axis=-1, keepdims=True) if grayscale else images)

    names = [f"{'uncond' if not spec.c_dim else f'class{k:03d}'}_seed{s:05d}" for s, k, _ in rows]
    if jax.process_index() != 0:
        return names
    annotate.write_folder_files(out_dir, labels, mf.annotator_readme(labels, mf.label_colors(labels)))
    for i, ((seed, k, cname), name) in enumerate(zip(rows, names, strict=True)):
        sidecar = annotate.make_sidecar(
            name=name, seed=seed, class_index=k, class_name=cname, truncation_psi=psi, truncation_cutoff=cutoff,
            z=z[i], ws=ws[i], digest=digest, image_size=images.shape[1:3], image_channels=spec.img_channels,
            grayscale=grayscale, generator_source=source)
        annotate.write_item(out_dir, u8[i], sidecar)
    logging.info("wrote %d images + sidecars + mask templates to %s", len(rows), out_dir)
    return names


def run(config, workdir: str) -> None:
    spec, variables, source = load_model(config)
    export_annotation_set(config, spec, variables, os.path.join(workdir, config.out_dir), source)
