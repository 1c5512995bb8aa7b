"""Issue 7 acceptance 1: the interpreter learns a mask with a known answer from 50 samples.

The "true" mask of a sample is a fixed rule on its generated image, not a single feature channel: label 1 = the
connected regions (4-connectivity, >= MIN_REGION px) where the Gaussian-smoothed (sigma 1 px) luminance (channel
mean) lies above the training set's median (a threshold fixed on the 50 training images, so both classes cover about
half the pixels). The interpreter is trained as `interpret_train` does (`interpret/trainer.py`: features recomputed
from ws by the frozen generator in every step; Adam lr 1e-4, batch 4) on 50 samples and scored on 500 new ones
(mean per-sample Dice of label 1). The control trains the same way on the same images with the masks permuted across
samples (no sample keeps its own) and must stay at chance: no better than another sample's true mask or than "all
label 1" (both about 0.5-0.67 Dice here, since label 1 covers about half the pixels).

Measured (2 CPU cores, widths 16/8/8, 40 epochs = 480 steps of 4; Dice on 500 new samples):
- the quickstart generator (16 px, 4 phantom classes, trained): Dice 0.912, control 0.635 (chance: 0.617 for another
  sample's true mask, 0.665 for all label 1) (test_trained_generator,
  run when RADGAN_TRAINED_GENERATOR names a generator checkpoint; or `python -m tests.interpret.test_learnability
  --generator DIR`); that generator is kept in tests/assets/quickstart_g16.npz, so CI runs this check.
- demo32 (random init, what CI has) cannot reach 0.9, whatever the head: in a random-init StyleGAN-XL every ToRGB
  input channel is scaled by a per-sample style s_i(w) = 1 + O(1) noise, so the image is a *different* linear read-out
  of the last features for every sample (a ridge regression of the luminance on all features, fitted on 50 images,
  explains 65% of its variance on new ones; 95% for the trained quickstart generator). Truncation toward w_avg (= 0 at
  init) shrinks those style differences: at psi 0.3 the same ridge explains 91% and the interpreter reaches Dice
  0.826 vs 0.629 for the control; that is what test_demo32 asserts (with margins).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from scipy import ndimage

from radgan_jax.interpret import trainer as tr
from radgan_jax.interpret.features import class_embedding, feature_groups, synthesize_with_features
from radgan_jax.interpret.losses import dice_per_label, predict_labels
from radgan_jax.models.interpreter import Interpreter, init_interpreter
from radgan_jax.models.stylegan_xl.generator import Generator

SIGMA = 1.0
MIN_REGION = 4
LABELS = 2  # background + "bright"


def smoothed_luminance(images: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """[N, H, W, C] images -> [N, H, W] channel mean, Gaussian-smoothed per image."""
    return ndimage.gaussian_filter(np.asarray(images, np.float64).mean(-1), sigma=(0, sigma, sigma), mode="nearest")


def rule_masks(images: np.ndarray, threshold: float, sigma: float = SIGMA, min_region: int = MIN_REGION) -> np.ndarray:
    """The known answer: 1 on connected regions (>= min_region px) of smoothed luminance > threshold, else 0."""
    above = smoothed_luminance(images, sigma) > threshold
    masks = np.zeros(above.shape, np.int32)
    for i, a in enumerate(above):
        lab, _ = ndimage.label(a)
        sizes = np.bincount(lab.ravel())
        keep = sizes >= min_region
        keep[0] = False
        masks[i] = keep[lab]
    return masks


def sample_latents(gen: Generator, variables: Any, key: jax.Array, n: int, psi: float) -> tuple[np.ndarray, np.ndarray]:
    """n latents: ws [n, num_ws, w_dim] (truncated with psi) and random classes c [n]."""
    spec = gen.spec
    z = jax.random.normal(jax.random.fold_in(key, 0), (n, spec.z_dim))
    c = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, max(spec.c_dim, 1))
    onehot = jax.nn.one_hot(c, spec.c_dim) if spec.c_dim else np.zeros((n, 0), np.float32)
    ws = jax.jit(functools.partial(gen.apply, truncation_psi=psi, method=Generator.map))(variables, z, onehot)
    return np.asarray(ws, np.float32), np.asarray(c, np.int32)


@functools.lru_cache(maxsize=4)
def _images_and_predictions(gen: Generator, model: Interpreter, groups: tuple):
    """jit: (gen vars, interpreter vars A, B, ws, c) -> (images, labels of A, labels of B): one synthesis for both."""

    def fn(gen_vars, va, vb, ws, c):
        img, feats = synthesize_with_features(gen, gen_vars, ws, groups)
        y = class_embedding(gen, gen_vars, c)
        return (img, predict_labels(model.apply(va, feats, y, train=False)),
                predict_labels(model.apply(vb, feats, y, train=False)))

    return jax.jit(fn)


def _chunks(fn, gen_vars, va, vb, ws, c, size: int = 50):
    outs = [fn(gen_vars, va, vb, ws[s:s + size], c[s:s + size]) for s in range(0, len(ws), size)]
    return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(3))


def _mean_dice(pred: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(mean per-sample Dice of label 1, samples where it is absent from both left out; pooled Dice)."""
    per = np.asarray(dice_per_label(pred, masks, LABELS))[:, 0]
    inter = np.sum((pred == 1) & (masks == 1))
    pooled = 2 * inter / max(np.sum(pred == 1) + np.sum(masks == 1), 1)
    return float(np.nanmean(per)), float(pooled)


def learnability(gen: Generator, variables: Any, *, n_train: int = 50, n_test: int = 500, epochs: int = 40,
                 psi: float = 1.0, widths: tuple[int, int, int] = (16, 8, 8), lr: float = 1e-4, batch: int = 4,
                 seed: int = 0, log: bool = False) -> dict[str, Any]:
    """Trains on the rule's masks and on permuted masks; returns Dice on n_test new samples and settings."""
    t0 = time.time()
    groups = tuple(feature_groups(gen.spec))
    model = Interpreter(num_outputs=1, widths=tuple(widths))  # two labels: one sigmoid output, BCE
    key = jax.random.key(seed)
    ws, c = sample_latents(gen, variables, jax.random.fold_in(key, 1), n_train, psi)
    wt, ct = sample_latents(gen, variables, jax.random.fold_in(key, 2), n_test, psi)
    y_dim = int(np.asarray(class_embedding(gen, variables, c[:1])).shape[-1])
    init = init_interpreter(model, groups, y_dim, jax.random.fold_in(key, 3))
    evaluate = _images_and_predictions(gen, model, groups)
    images, _, _ = _chunks(evaluate, variables, init, init, ws, c)
    threshold = float(np.median(smoothed_luminance(images)))
    masks = rule_masks(images, threshold)
    order = np.random.default_rng(seed).permutation(n_train)  # a cyclic shift along a random order: a derangement
    control = np.empty_like(masks)
    control[order] = masks[np.roll(order, 1)]

    tx = tr.adam(lr)
    step = tr.make_train_step(gen, variables, model, tx, tr.LossConfig(num_labels=LABELS), groups)
    trained = []
    for name, target in (("rule", masks), ("control", control)):
        state = tr.create_state(jax.tree.map(np.array, init), tx)  # copies: the step donates its state
        for epoch in range(epochs):
            losses = []
            for idx in tr.epoch_batches(tr.epoch_order(jax.random.fold_in(key, 4), epoch, n_train), batch):
                state, m = step(state, {"ws": ws[idx], "c": c[idx], "masks": target[idx]})
                losses.append(m["loss"])
            if log and (epoch % 10 == 9 or epoch == epochs - 1):
                print(f"  {name} epoch {epoch + 1}: loss {np.mean(jax.device_get(losses)):.4f}", flush=True)
        trained.append(jax.device_get(state.variables()))

    test_images, pred, pred_control = _chunks(evaluate, variables, trained[0], trained[1], wt, ct)
    truth = rule_masks(test_images, threshold)
    dice, pooled = _mean_dice(pred, truth)
    dice_control, pooled_control = _mean_dice(pred_control, truth)
    # Chance levels: another sample's true mask (right statistics, wrong image), and "everything is label 1".
    other = truth[np.random.default_rng(seed + 1).permutation(n_test)]
    return {"dice": dice, "dice_pooled": pooled, "dice_control": dice_control, "dice_control_pooled": pooled_control,
            "chance_other_mask": _mean_dice(other, truth)[0],
            "chance_all_label1": _mean_dice(np.ones_like(truth), truth)[0],
            "label1_fraction_train": float(masks.mean()), "label1_fraction_test": float(truth.mean()),
            "n_train": n_train, "n_test": n_test, "epochs": epochs, "steps": epochs * (n_train // batch),
            "batch": batch, "lr": lr, "psi": psi, "widths": list(widths), "resolution": gen.spec.img_resolution,
            "seconds": round(time.time() - t0, 1)}


@pytest.mark.slow  # ~3-5 min on 2 CPU cores
def test_demo32():
    from radgan_jax.models.stylegan_xl.builtin import builtin_generator

    spec, variables = builtin_generator("demo32", jax.random.key(0))
    r = learnability(Generator(spec), variables, psi=0.3, epochs=40)
    print("demo32 learnability:", json.dumps(r))
    assert 0.35 < r["label1_fraction_test"] < 0.65
    assert r["dice"] >= 0.7, r
    assert r["dice_control"] <= r["dice"] - 0.12, r


ASSET = Path(__file__).resolve().parents[1] / "assets" / "quickstart_g16.npz"


def load_asset_generator(path: Path = ASSET) -> tuple[Any, dict]:
    """(spec, variables) of the generator stored in tests/assets: G_ema of the README quickstart run
    (`configs/quickstart.py`, 4 kimg, 16 px, 4 phantom classes; 1.2 MB), flattened as 'collection/.../leaf'."""
    from radgan_jax.models.stylegan_xl.generator import GeneratorSpec

    with np.load(path) as z:
        spec = GeneratorSpec.from_dict(json.loads(bytes(z["__spec__"]).decode()))
        variables: dict = {}
        for key in z.files:
            if key == "__spec__":
                continue
            *parents, leaf = key.split("/")
            node = variables
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = z[key]
    return spec, variables


def test_trained_generator():
    """Dice >= 0.9 on a trained generator: RADGAN_TRAINED_GENERATOR=DIR (a generator checkpoint), else the
    quickstart-trained 16 px generator kept in tests/assets (~1 min on 2 CPU cores)."""
    path = os.environ.get("RADGAN_TRAINED_GENERATOR")
    if path:
        from radgan_jax.checkpoint import load_generator

        spec, variables, _ = load_generator(path)
    else:
        path = str(ASSET)
        spec, variables = load_asset_generator()
    r = learnability(Generator(spec), variables, epochs=40)
    print(f"learnability on {path}:", json.dumps(r))
    assert r["dice"] >= 0.9, r
    chance = max(r["chance_other_mask"], r["chance_all_label1"])
    assert r["dice_control"] <= chance + 0.05, r  # the control learns nothing beyond the label prior


def main() -> None:
    p = argparse.ArgumentParser(description="Learnability of a rule mask by the interpreter (issue 7 acceptance 1)")
    p.add_argument("--generator", default="", help="generator checkpoint dir; default: --builtin")
    p.add_argument("--builtin", default="demo32")
    p.add_argument("--psi", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--widths", default="16,8,8")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.generator:
        from radgan_jax.checkpoint import load_generator

        spec, variables, _ = load_generator(Path(a.generator))
    else:
        from radgan_jax.models.stylegan_xl.builtin import builtin_generator

        spec, variables = builtin_generator(a.builtin, jax.random.key(0))
    r = learnability(Generator(spec), variables, n_train=a.n_train, n_test=a.n_test, epochs=a.epochs, psi=a.psi,
                     widths=tuple(int(w) for w in a.widths.split(",")), lr=a.lr, seed=a.seed, log=True)
    print(json.dumps({"generator": a.generator or a.builtin, **r}))


if __name__ == "__main__":
    main()
