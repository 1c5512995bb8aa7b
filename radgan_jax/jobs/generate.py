"""`mode=generate`: images from a generator checkpoint, with the official gen_images.py seed semantics.

    python -m radgan_jax.main --config=configs/generate.py --workdir=OUT \
        --config.checkpoint=CKPT --config.classes=0,3 --config.seeds=0-99 --config.truncation_psi=0.7

writes OUT/images/<class>_seed<seed>.png (8-bit; `grayscale` for CT/MR), OUT/images.npz (float images NHWC,
z, class, seed) and OUT/grid_<class>.png per class. Exact-reproduction mode (`z_file`, `c_file`,
`out_npy`): run given latents/labels and save float32 NCHW images like the original.
Generation is batch-sharded over every device of the mesh; the last batch is padded to the fixed batch
shape (one compilation), and padded rows are dropped.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from radgan_jax import rng
from radgan_jax.checkpoint import load_generator
from radgan_jax.eval.grids import save_grid, save_png
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from radgan_jax.models.stylegan_xl.generator import Generator, GeneratorSpec
from radgan_jax.models.stylegan_xl.sampling import (
    input_transform,
    one_hot,
    parse_range,
    random_class_from_seed,
    to_uint8,
    z_from_seed,
)
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import (
    batch_sharding,
    global_from_host,
    host_from_global,
    pad_to_multiple,
    replicate_tree,
    replicated,
)


def load_model(config) -> tuple[GeneratorSpec, dict, str]:
    """(spec, variables, description) from `config.checkpoint` or a built-in generator."""
    if config.checkpoint:
        step = None if config.checkpoint_step < 0 else int(config.checkpoint_step)
        spec, variables, _ = load_generator(config.checkpoint, step=step)
        return spec, variables, config.checkpoint
    if config.builtin:
        spec, variables = builtin_generator(config.builtin, rng.derive(rng.root_key(config.seed), "builtin"))
        return spec, jax.device_get(variables), f"built-in '{config.builtin}' (random init, seed {config.seed})"
    raise ValueError("generate: set --config.checkpoint=DIR (a converted or trained generator) or "
                     "--config.builtin=NAME")


def _parse_floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def make_generate_fn(gen: Generator, mesh, psi: float, cutoff: int | None):
    """jit(variables, z, c, transform) -> images, batch-sharded over the mesh."""
    bs2, bs4 = batch_sharding(mesh, 2), batch_sharding(mesh, 4)

    @functools.partial(jax.jit, in_shardings=(replicated(mesh), bs2, bs2, replicated(mesh)), out_shardings=bs4)
    def fn(variables, z, c, transform):
        return gen.apply(variables, z, c, truncation_psi=psi, truncation_cutoff=cutoff, transform=transform)

    return fn


def generate_arrays(gen: Generator, variables: Any, mesh, z: np.ndarray, c: np.ndarray, *, psi: float,
                    cutoff: int | None, transform: np.ndarray, batch_size: int, progress: bool = True
                    ) -> np.ndarray:
    """All images for latents `z` [N, z_dim] and one-hot `c` [N, c_dim], as NHWC float32 numpy."""
    n = len(z)
    batch = pad_to_multiple(max(1, min(batch_size, n)), mesh)
    fn = make_generate_fn(gen, mesh, psi, cutoff)
    variables = replicate_tree(mesh, variables)
    transform = replicate_tree(mesh, np.asarray(transform, np.float32))
    out = []
    starts = range(0, n, batch)
    for s in tqdm(starts, desc="generate", unit="batch", disable=not progress or jax.process_index() != 0):
        zb, cb = z[s:s + batch], c[s:s + batch]
        pad = batch - len(zb)
        if pad:  # repeat the last row: keeps the batch shape fixed (one compile); rows dropped below
            zb = np.concatenate([zb, np.repeat(zb[-1:], pad, 0)])
            cb = np.concatenate([cb, np.repeat(cb[-1:], pad, 0)])
        img = fn(variables, global_from_host(mesh, zb), global_from_host(mesh, cb), transform)
        out.append(host_from_global(img)[: batch - pad])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def product_class_table(config, spec: GeneratorSpec) -> Any:
    """The product's class table: config.product, or 'auto' by c_dim (124: ctmr, 6: gastro); else None."""
    from radgan_jax.data.classes import PRODUCTS, class_table

    product = str(config.get("product", "auto") or "auto")
    if product == "auto":
        product = {len(class_table(p)): p for p in PRODUCTS}.get(spec.c_dim, "")
    if not product:
        return None
    table = class_table(product)
    if len(table) != spec.c_dim:
        raise ValueError(f"--config.product={product} has {len(table)} classes but this generator has "
                         f"c_dim={spec.c_dim}")
    return table


def requested_class_labels(config, spec: GeneratorSpec) -> list[int] | None:
    """Class indices of `config.classes` (ranges, or the product table's labels); None = random per seed."""
    if spec.c_dim == 0:
        return None
    text = str(config.classes).strip()
    if not text:
        return None  # random class per seed, as gen_images.py without --class
    if re.fullmatch(r"[\d,\s-]+", text):
        labels = parse_range(text)
    else:  # class labels of the paper's table (e.g. 'spine_ddd,abd_normal'), indices may be mixed in
        table = product_class_table(config, spec)
        if table is None:
            raise ValueError(f"--config.classes={text!r} names classes, but this generator (c_dim={spec.c_dim}) "
                             f"is neither ctmr (124) nor gastro (6): set --config.product or use indices")
        labels = table.parse(text)
    bad = [c for c in labels if not 0 <= c < spec.c_dim]
    if bad:
        raise ValueError(f"classes {bad} outside [0, {spec.c_dim}) for this generator")
    return labels


def _label_name(label: int | None) -> str:
    return "uncond" if label is None else f"class{label:03d}"


def run(config, workdir: str) -> None:
    spec, variables, source = load_model(config)
    mesh = make_mesh(config.mesh)
    gen = Generator(spec, compute_dtype=config.compute_dtype)
    cutoff = None if config.truncation_cutoff < 0 else int(config.truncation_cutoff)
    transform = input_transform(_parse_floats(config.translate, 2, "translate"), float(config.rotate))
    logging.info("generator %s: %dpx, c_dim=%d; mesh %s", source, spec.img_resolution, spec.c_dim,
                 dict(mesh.shape))
    kw = dict(psi=float(config.truncation_psi), cutoff=cutoff, transform=transform,
              batch_size=int(config.batch_size))

    if config.z_file:  # exact reproduction: given latents and labels, float32 NCHW out
        z = np.load(config.z_file).astype(np.float32)
        if z.ndim != 2 or z.shape[1] != spec.z_dim:
            raise ValueError(f"{config.z_file}: z must be [N, {spec.z_dim}], got {z.shape}")
        if spec.c_dim:
            if not config.c_file:
                raise ValueError("z_file given for a conditional generator: also set --config.c_file")
            c = np.load(config.c_file).astype(np.float32)
            if c.shape != (len(z), spec.c_dim):
                raise ValueError(f"{config.c_file}: c must be [{len(z)}, {spec.c_dim}], got {c.shape}")
        else:
            c = np.zeros((len(z), 0), np.float32)
        images = generate_arrays(gen, variables, mesh, z, c, **kw)
        out = config.out_npy or os.path.join(workdir, "images.npy")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            np.save(out, np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            logging.info("wrote %s (%s)", out, images.shape)
        return

    seeds = parse_range(config.seeds)
    if not seeds:
        raise ValueError("generate: --config.seeds is empty (e.g. '0-15')")
    labels = requested_class_labels(config, spec)
    rows: list[tuple[int, int | None]] = []
    if labels is None:
        rows = [(s, None if spec.c_dim == 0 else int(random_class_from_seed(s, spec.c_dim)[0])) for s in seeds]
    else:
        rows = [(s, lab) for lab in labels for s in seeds]
    z = np.concatenate([z_from_seed(s, spec.z_dim) for s, _ in rows])
    c = one_hot([lab for _, lab in rows], spec.c_dim) if spec.c_dim else np.zeros((len(rows), 0), np.float32)
    images = generate_arrays(gen, variables, mesh, z, c, **kw)
    if jax.process_index() != 0:
        return
    _write_outputs(config, workdir, images, z, rows)


def _write_outputs(config, workdir: str, images: np.ndarray, z: np.ndarray, rows) -> None:
    img_dir = os.path.join(workdir, "images")
    os.makedirs(img_dir, exist_ok=True)
    u8 = to_uint8(images.mean(axis=-1, keepdims=True) if config.grayscale else images)
    if config.write_png:
        for (seed, lab), im in tqdm(list(zip(rows, u8, strict=True)), desc="png", unit="img"):
            save_png(os.path.join(img_dir, f"{_label_name(lab)}_seed{seed:04d}.png"), im)
    labels_arr = np.array([-1 if lab is None else lab for _, lab in rows])
    np.savez(os.path.join(workdir, "images.npz"), images=images, z=z, label=labels_arr,
             seed=np.array([s for s, _ in rows]), truncation_psi=np.float32(config.truncation_psi))
    grids = []
    for lab in dict.fromkeys(lab for _, lab in rows):
        sel = u8[[i for i, (_, r) in enumerate(rows) if r == lab]]
        path = os.path.join(workdir, f"grid_{_label_name(lab)}.png")
        save_grid(path, sel)
        grids.append(path)
    with open(os.path.join(workdir, "generate_summary.json"), "w") as f:
        json.dump({"num_images": len(rows), "grids": grids, "config": config.to_dict()}, f, indent=1,
                  default=str)
    logging.info("wrote %d images, %d grids to %s", len(rows), len(grids), workdir)
