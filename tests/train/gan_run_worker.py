"""Subprocess worker for the GAN training tests (device count must be fixed before JAX starts).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/gan_run_worker.py OUT.npz

Runs the same 3 training steps (batch 8, 2 accumulation rounds) of a tiny conditional StyleGAN-XL + projected D
on a mesh of all devices, on a mesh of one device, and again on all devices; saves the final states.
"""

from __future__ import annotations

import sys

import jax
import ml_collections
import numpy as np

from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import global_from_host, host_from_global
from radgan_jax.train import gan_setup


def tiny_config(micro_batch: int = 4) -> ml_collections.ConfigDict:
    from configs import quickstart

    config = quickstart.get_config()
    config.discriminator.weights.tf_efficientnet_lite0 = "random"
    config.discriminator.input_size = 32
    config.discriminator.projector_im_res = 32
    config.train.micro_batch = micro_batch
    config.train.unroll_rounds = "scan"  # exercise lax.scan accumulation
    config.train.blur_fade_kimg = 0.1
    return config


def run_steps(devices, steps: int = 3) -> dict[str, np.ndarray]:
    config = tiny_config()
    mesh = make_mesh({"data": -1}, devices)
    setup = gan_setup.build(config, mesh, class_probs=(0.4, 0.3, 0.2, 0.1))
    state = setup.state
    rs = np.random.RandomState(0)
    for i in range(steps):
        batch = {"image": rs.randint(0, 256, (8, 16, 16, 3)).astype(np.uint8),
                 "label": (np.arange(8) + i) % 4}
        state, metrics = setup.step_fn(state, jax.tree.map(lambda a: global_from_host(mesh, a), batch), do_pl=i == 1)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {jax.tree_util.keystr(p): host_from_global(x) for p, x in flat if hasattr(x, "dtype")}
    out.update({f"metric{k}": np.asarray(v) for k, v in metrics.items()})
    return out


def main(out: str) -> None:
    all_devices = jax.devices()
    a = run_steps(all_devices)
    b = run_steps(all_devices[:1])
    c = run_steps(all_devices)
    np.savez(out, num_devices=len(all_devices), **{f"a{k}": v for k, v in a.items()},
             **{f"b{k}": v for k, v in b.items()}, **{f"c{k}": v for k, v in c.items()})


if __name__ == "__main__":
    main(sys.argv[1])
