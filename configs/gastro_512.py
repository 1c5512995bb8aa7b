"""RadImageGAN Gastro generator: 6 HyperKvasir classes, StyleGAN-XL grown 16 -> 512 px.

    python -m radgan_jax.main --config=configs/gastro_512.py:64 --workdir=DIR

Same architecture and stage schedule as configs/ctmr_512.py.
"""

from radgan_jax.configs_common import gan_stage_config

STAGES = (16, 32, 64, 128, 256, 512)


def get_config(arg: str | None = None):
    return gan_stage_config(product="gastro", c_dim=6, stage=arg or "16", stages=STAGES)
