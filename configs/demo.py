"""Built-in demo: a sample grid per class from a small randomly initialised StyleGAN-XL (16 -> 32 px).

    python -m radgan_jax.main --config=configs/demo.py --workdir=out/demo

Needs no input files: it shows the whole generate path (mesh, sharding, seeds, PNGs, grids). The images are
those of an untrained network (Fourier-feature patterns), not radiology: see configs/generate.py for
a converted or trained generator.
"""

from radgan_jax.configs_common import generate_config


def get_config(arg: str | None = None):
    config = generate_config()
    config.builtin = "demo32"
    config.classes = "0-3"
    config.seeds = "0-15"
    config.truncation_psi = 1.0
    return config
