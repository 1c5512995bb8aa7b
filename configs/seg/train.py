"""nnU-Net v2 2D training of one fold (nnUNetTrainer: 250 iterations + 50 validation batches per epoch, SGD
0.01 Nesterov 0.99, PolyLR, DC+CE with deep supervision, nnU-Net's augmentation on device).

    python -m radgan_jax.main --config=configs/seg/train.py --config.plans=PLANS_DIR --config.fold=0 \
        --workdir=runs/fold0 [--config.epochs=100] [--config.pretrained=CKPT_DIR]
    python -m radgan_jax.main --config=configs/seg/train.py:quick --config.plans=PLANS_DIR --workdir=...

PLANS_DIR is a seg_plan output (configs/seg/plan.py). `epochs` 1000 is nnU-Net's default; the paper trains 100.
`pretrained` = a seg_train checkpoint dir (its checkpoint_final or checkpoint_best): everything but the
segmentation heads is loaded, as nnU-Net's `-pretrained_weights` ("synthetic pretraining"). The arg 'quick' is a
CPU-sized smoke setting (2 epochs of 5 + 2 iterations).
"""

import ml_collections

from radgan_jax.configs_common import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "seg_train"
    config.seed = 0
    config.distributed = False
    config.mesh = mesh_config()
    config.plans = ""                 # seg_plan output folder
    config.raw_dataset = ""           # raw dataset folder: its case_groups.json groups the folds by patient
    config.splits_file = ""           # default PLANS_DIR/splits_final.json (created as nnU-Net does when absent)
    config.fold = "0"                 # 0..4 or 'all'
    config.epochs = 1000              # nnUNetTrainer.num_epochs
    config.iterations_per_epoch = 250
    config.val_iterations = 50
    config.batch_size = 0             # 0: the plan's
    config.augment = True
    config.compute_dtype = "float32"  # 'bfloat16': conv compute in bf16, params and loss in fp32
    config.pretrained = ""
    config.checkpoint_every = 1       # epochs between resumable checkpoints
    config.final_validation = True    # sliding-window prediction of the fold's validation cases -> summary.json
    config.progress = True
    if arg == "quick":
        config.epochs, config.iterations_per_epoch, config.val_iterations = 2, 5, 2
    elif arg:
        raise ValueError(f"configs/seg/train.py: unknown arg {arg!r} (use 'quick' or nothing)")
    return config
