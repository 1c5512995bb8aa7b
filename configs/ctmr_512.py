"""RadImageGAN CT/MR generator: 124 RadImageNet pathology classes, StyleGAN-XL grown 16 -> 512 px.

    python -m radgan_jax.main --config=configs/ctmr_512.py:16 --workdir=DIR    # stem
    python -m radgan_jax.main --config=configs/ctmr_512.py:32 --workdir=DIR    # first superres head

The arg picks the stage (16, 32, 64, 128, 256, 512). Paper setting: syn_layers 10, head_layers 7, train.py
channel defaults; batch 2048 at 16/32 and 256 above; x-flip on except at 512.
`--config.mode=summary` prints the layer table and parameter counts of the stage instead of training.
"""

from radgan_jax.configs_common import gan_stage_config

STAGES = (16, 32, 64, 128, 256, 512)


def get_config(arg: str | None = None):
    return gan_stage_config(product="ctmr", c_dim=124, stage=arg or "16", stages=STAGES)
