"""Export synthetic images for annotation (issue 7, BigDatasetGAN step 1): images + sidecars + empty masks.

    python -m radgan_jax.main --config=configs/interpret/export.py --workdir=OUT \
        --config.checkpoint=GEN --config.classes=abd_normal --config.num_per_class=50 \
        --config.labels=liver,kidney

writes OUT/annotation/ (README.txt there tells annotators the three accepted mask formats). Try it without a
checkpoint: --config.builtin=demo32 (random init, 4 classes).
"""

import ml_collections

from radgan_jax.configs_common import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "interpret_export"
    config.seed = 0                # image j uses seed `seed + j` (gen_images.py semantics); also seeds `builtin`
    config.distributed = False
    config.mesh = mesh_config()
    config.checkpoint = ""         # generator checkpoint dir (converted or trained); or:
    config.checkpoint_step = -1    # -1: latest
    config.builtin = ""            # a built-in random generator, e.g. 'demo32'
    config.classes = "0"           # '0,3,5-7' or the product's class labels ('abd_normal,spine_ddd')
    config.product = "auto"        # class table for labels: 'ctmr', 'gastro' or 'auto' (by c_dim)
    config.num_per_class = 50      # the paper annotates ~50 images per task
    config.truncation_psi = 1.0
    config.truncation_cutoff = -1  # -1: truncate every ws row
    config.labels = "liver,kidney" # foreground labels, ids 1.. in this order; background is 0
    config.batch_size = 32         # global; rounded up to a multiple of the data-parallel devices
    config.compute_dtype = "float32"
    config.grayscale = False       # grey PNGs for a 3-channel generator (1-channel generators always are)
    config.out_dir = "annotation"  # under --workdir
    return config
