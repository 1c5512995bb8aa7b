"""Train the BigDatasetGAN feature interpreter on annotated synthetic images (issue 7, step 2).

    python -m radgan_jax.main --config=configs/interpret/train.py --workdir=OUT \
        --config.checkpoint=GEN --config.annotations=ANNOT_DIR [--config.labels=liver,kidney]

ANNOT_DIR is the folder `interpret_export` wrote (masks filled in by annotators) or an .npz saved by
`AnnotatedSet.save_npz`. The generator must be the one the images were exported from (checked by digest).
Writes OUT/interpreter/ (what `interpret_sample` loads), OUT/checkpoints/ (resume: rerun the same command),
training_log.jsonl, loss_curve.png and previews/ (prediction vs annotation per training image).
Defaults are the paper's: Adam lr 1e-4, batch 4, 100 epochs. Try it without a checkpoint: --config.builtin=demo32
(with annotations exported from the same built-in, same --config.builtin_seed).
"""

import ml_collections

from radgan_jax.configs_common import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "interpret_train"
    config.seed = 0                 # interpreter init and the per-epoch sample order
    config.distributed = False
    config.mesh = mesh_config()
    config.checkpoint = ""          # generator checkpoint dir (the one the annotated images came from); or:
    config.checkpoint_step = -1     # -1: latest
    config.builtin = ""             # a built-in random generator, e.g. 'demo32'
    config.builtin_seed = 0         # its init seed (= interpret_export's --config.seed); not `seed`, so interpreters
                                    # trained with several seeds (an ensemble) share one generator
    config.compute_dtype = "float32"  # generator synthesis layers: float32 | bfloat16 | float16
    config.annotations = ""         # annotation folder (interpret_export output, masks filled) or an .npz
    config.labels = ""              # optional 'liver,kidney': refuse annotations made with another label map
    config.allow_empty = False      # train on all-background masks too (otherwise untouched templates are skipped)
    config.epochs = 100             # the paper's setting
    config.batch_size = 4           # global; must split over the mesh's batch axes; remainder per epoch dropped
    config.lr = 1e-4                # Adam (the paper; BigDatasetGAN's train.py default is 1e-3)
    config.dice_weight = 0.0        # + dice_weight x soft Dice (nnU-Net's, background excluded) on top of CE/BCE
    config.widths = "128,64,32"     # low / mid / high 1x1-conv widths (BigDatasetGAN models.py)
    config.include_input = False    # also read the synthesis input layer (Fourier features)
    config.checkpoint_every = 1     # epochs between resumable checkpoints
    config.num_previews = 16        # training images drawn as prediction-vs-annotation overlays at the end
    config.progress = True
    if arg == "quick":
        config.epochs = 3
    elif arg:
        raise ValueError(f"configs/interpret/train.py: unknown arg {arg!r} (use 'quick' or nothing)")
    return config
