"""Generate images from a generator checkpoint (converted official network or our training).

    python -m radgan_jax.main --config=configs/generate.py --workdir=OUT \
        --config.checkpoint=CKPT --config.classes=0,5 --config.seeds=0-99 --config.truncation_psi=0.7

Seeds mean what they mean in the official gen_images.py. Exact reproduction of given latents:
    --config.z_file=z.npy --config.c_file=c.npy --config.out_npy=img.npy   (float32 NCHW out)
"""

from radgan_jax.configs_common import generate_config


def get_config(arg: str | None = None):
    return generate_config()
