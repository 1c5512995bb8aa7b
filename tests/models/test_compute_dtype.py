"""bf16 / fp16 synthesis (the original's use_fp16 layers in reduced precision, clamp 256) stays close to fp32."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.models.stylegan_xl.generator import Generator

from .golden_generator import load_golden_generator, nchw


@pytest.fixture(scope="module")
def golden32(golden_dir: Path):
    return load_golden_generator(golden_dir / "stylegan_xl_32")


# Max |error| vs the official fp32 image (max |img| 0.70): bf16 has an 8-bit mantissa, fp16 a 10-bit one.
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 0.03), ("float16", 0.006)])
def test_reduced_precision_close_to_official(golden32, golden_dir: Path, dtype: str, tol: float):
    gen, variables, config, _ = golden32
    folder = golden_dir / "stylegan_xl_32"
    z, c = np.load(folder / "z.npy"), np.load(folder / "c.npy")
    model = Generator(gen.spec, compute_dtype=dtype)

    @functools.partial(jax.jit)
    def run(v):
        return model.apply(v, z, c, truncation_psi=0.7, mutable=["intermediates"])

    img, state = run(variables)
    img = nchw(img)
    assert img.dtype == np.float32 and np.isfinite(img).all()
    err = np.abs(img - np.load(folder / "img_psi0.7_const.npy")).max()
    assert err < tol, f"{dtype}: max |err| {err}"
    if dtype != "float32":
        assert err > 1e-6, "reduced precision had no effect: the layers did not run in it"
    fp16_flags = {layer["name"]: layer["use_fp16_on_cuda"] for layer in config["layers"]}
    inter = state["intermediates"]["synthesis"]
    for name, use_fp16 in fp16_flags.items():
        got = inter[name]["modconv_out"][0].dtype
        assert got == (jnp.dtype(dtype) if use_fp16 else jnp.float32), (name, got)


def test_unknown_dtype_is_refused(golden32):
    gen, variables, _, _ = golden32
    with pytest.raises(ValueError, match=r"compute_dtype 'fp8' not in \['bfloat16', 'float16', 'float32'\]"):
        Generator(gen.spec, compute_dtype="fp8").apply(variables, np.zeros((1, 64), np.float32),
                                                         np.eye(4, dtype=np.float32)[:1])
