"""Building blocks shared by the experiment configs in configs/ (big_vision style: one file per experiment,
`get_config(arg)`; the pieces they have in common live here so every config reads the same defaults)."""

from __future__ import annotations

import ml_collections

from radgan_jax.models.stylegan_xl.from_config import stylegan_xl_config


def mesh_config() -> ml_collections.ConfigDict:
    """All devices on 'data' (pure data parallelism); see radgan_jax/parallel/mesh.py."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def gan_stage_config(product: str, c_dim: int, stage: str, stages: tuple[int, ...]) -> ml_collections.ConfigDict:
    try:
        res = int(stage)
    except ValueError:
        raise ValueError(f"stage must be one of {stages}, got {stage!r}") from None
    if res not in stages:
        raise ValueError(f"stage must be one of {stages}, got {res}")
    config = ml_collections.ConfigDict()
    config.mode = "summary"
    config.product = product
    config.seed = 0
    config.distributed = False
    config.mesh = mesh_config()
    config.model = stylegan_xl_config(resolution=res, c_dim=c_dim)
    config.train = ml_collections.ConfigDict(dict(
        batch_size=2048 if res <= 32 else 256,  # paper: 2048 for the 16/32 stages, 256 above
        xflip=res != 512,
        # Stage N starts from stage N/2's best checkpoint (required for N > 16).
        prev_stage_checkpoint="",
    ))
    return config


def generate_config() -> ml_collections.ConfigDict:
    """Defaults of `mode=generate` (configs/generate.py, configs/demo.py)."""
    config = ml_collections.ConfigDict()
    config.mode = "generate"
    config.seed = 0
    config.distributed = False
    config.mesh = mesh_config()
    config.checkpoint = ""         # generator checkpoint dir (tools/convert_stylegan_xl.py or training)
    config.checkpoint_step = -1    # -1: latest
    config.builtin = ""            # or a built-in random generator (radgan_jax/models/stylegan_xl/builtin.py)
    config.classes = ""            # '0,3,5-7' or labels 'spine_ddd,abd_normal'; empty: a random class per seed
    config.product = "auto"        # class table for labels: 'ctmr', 'gastro' or 'auto' (by c_dim: 124 / 6)
    config.seeds = "0-15"
    config.truncation_psi = 1.0
    config.truncation_cutoff = -1  # -1: truncate every ws row
    config.translate = "0,0"       # input transform, as gen_images.py --translate
    config.rotate = 0.0            # degrees, as gen_images.py --rotate
    config.batch_size = 32         # global; rounded up to a multiple of the data-parallel devices
    config.compute_dtype = "float32"  # or bfloat16 / float16 for the synthesis layers
    config.grayscale = False       # write 1-channel PNGs (channel mean), for CT/MR
    config.write_png = True
    config.z_file = ""
    config.c_file = ""
    config.out_npy = ""
    return config
