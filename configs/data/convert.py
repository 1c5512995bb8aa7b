"""Convert a dataset in any known layout to nnU-Net v2 raw format or to the GAN's TFDS/ArrayRecord datasets.

    python -m radgan_jax.main --config=configs/data/convert.py --workdir=OUT \
        --config.dataset=DIR [--config.format=auto|NAME] [--config.target=nnunet|tfds]

nnunet: OUT/nnUNet_raw/DatasetXXX_Name (set --config.dataset_id / --config.dataset_name); `resize=paper` is the
paper's in-plane size of that dataset (512, Lumbar Spine 320), `slices=True` writes 2D axial slices of volumes.
tfds: OUT/tfds/<name>_<R>px per resolution in `resolutions`; `product=ctmr|gastro` names the classes.
Bad cases are skipped (or, with quarantine=True, moved to OUT/quarantine) and counted; see OUT/convert_report.json.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "data_convert"
    config.dataset = placeholder(str)   # dataset folder (required)
    config.format = "auto"              # or a reader name (radgan_jax/data/readers/__init__.py)
    config.reader_options = ""          # 'key=value,...' passed to the reader, e.g. 'label_map=original'
    config.target = "nnunet"            # 'nnunet' or 'tfds'
    config.max_cases = 0                # 0: all; N: the first N items (a quick subset)
    config.progress = True
    # Bad cases: always skipped and counted; quarantine=True also moves their files out of the dataset.
    config.quarantine = False
    config.quarantine_dir = ""          # default WORKDIR/quarantine
    # --- target=nnunet
    config.dataset_id = 500             # nnU-Net DatasetXXX id, 1..999
    config.dataset_name = ""            # default: the format name
    config.resize = "0"                 # '0' keep, 'paper' (the reader's paper_size) or a size like '512'
    config.slices = False               # volumes -> 2D axial slices (nnU-Net 2D); False keeps 3D volumes
    config.file_ending = "auto"         # 'auto', '.png' or '.nii.gz'
    config.channel_names = ""           # 'CT' / 'MR' / 'R,G,B'; empty: R,G,B for colour, else by dataset
    config.split = "imagesTr"           # or 'imagesTs' (adds a test split to an existing dataset)
    config.overwrite = False
    # --- target=tfds
    config.resolutions = "16,32,64"
    config.product = ""                 # 'ctmr' | 'gastro': class names from the paper's Table S1; '' unconditional
    config.xflip = False
    # 'CT': the GAN images are CT-windowed (see window), and nnU-Net's channel name is 'CT' (its CT
    # normalisation) when channel_names is empty; 'auto': by dataset, robust min-max / uint8 kept.
    config.modality = "auto"
    config.window = ""                  # 'level,width' in HU, e.g. '40,400'
    return config
