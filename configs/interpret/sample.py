"""The labeled-data factory (issue 7, BigDatasetGAN step 3): M (image, mask) pairs per class from a generator and
its trained interpreter(s), written as an nnU-Net v2 raw dataset and a TFDS dataset, with overlays and grids.

    python -m radgan_jax.main --config=configs/interpret/sample.py --workdir=OUT \
        --config.checkpoint=GEN --config.interpreters=INTERP --config.classes=abd_normal \
        --config.num_per_class=10000

Ensemble (DatasetGAN's uncertainty filter): --config.interpreters=I1,I2,I3 --config.filter_fraction=0.1.
Resumable: rerun the same command after a kill; finished chunks are kept, the files come out the same.
Multi-host: --config.distributed=True on every host (workdir on a filesystem all hosts share).
Try it without checkpoints: --config.builtin=demo32 plus an interpreter trained on it.
"""

import ml_collections

from radgan_jax.configs_common import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "interpret_sample"
    config.seed = 0                # sample i of class k: z = RandomState([seed, k, i]).randn(1, z_dim)
    config.distributed = False
    config.mesh = mesh_config()    # over this host's devices (hosts render their chunks independently)
    config.num_devices = -1        # -1: every local device; N: the first N (results do not depend on it)
    config.checkpoint = ""         # generator checkpoint dir (converted or trained); or:
    config.checkpoint_step = -1    # -1: latest
    config.builtin = ""            # a built-in random generator, e.g. 'demo32' (seeded by `seed`)
    config.interpreters = ""       # interpreter checkpoint dir(s), comma-separated; > 1 = ensemble
    config.classes = "0"           # '0,3,5-7' or the product's class labels ('abd_normal,spine_ddd')
    config.product = "auto"        # class table for labels: 'ctmr', 'gastro' or 'auto' (by c_dim)
    config.num_per_class = 1000    # M
    config.truncation_psi = 1.0
    config.truncation_cutoff = -1  # -1: truncate every ws row
    config.compute_dtype = "float32"
    config.per_device_batch = 8    # rows per device per step; part of the reproducibility key (like the seed)
    config.chunk_size = 256        # samples per chunk: the unit of host work, resume and memory
    config.max_chunks = -1         # stop this run after rendering N chunks (no finalisation); -1: all
    config.grayscale = False       # 1-channel images for a 3-channel generator (1-channel generators always are)
    config.channel_names = ""      # nnU-Net channel names, comma-separated; '' = 'gray' or 'R,G,B'
    config.formats = "nnunet,tfds" # any of 'nnunet', 'tfds'
    config.dataset_id = 501        # nnU-Net DatasetXXX id (1..999)
    config.dataset_name = "RadImageGANLabeled"  # nnU-Net name; the TFDS name is its snake_case + '_<R>px'
    config.filter_fraction = 0.0   # ensemble only: drop this fraction of the most uncertain samples
    config.filter_scope = "class"  # 'class': the fraction of every class; 'all': of all samples together
    config.overlays_per_class = 8  # overlay previews of samples 0..N-1 of every class, and the grid width
    config.progress = True
    return config
