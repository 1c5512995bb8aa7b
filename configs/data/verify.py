"""Integrity check of a dataset in one of the supported layouts (like nnU-Net's --verify_dataset_integrity).

    python -m radgan_jax.main --config=configs/data/verify.py --workdir=OUT \
        --config.dataset=DIR [--config.format=cvc_clinicdb] [--config.quarantine=True]

Prints which format was found, item counts and every problem grouped by kind with its file; writes
OUT/verify_report.json and OUT/verify_report.txt; exits non-zero while problems remain. With quarantine the
bad files are moved to `quarantine_dir` (default OUT/quarantine), keeping their paths relative to DIR.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None):
    config = ml_collections.ConfigDict()
    config.mode = "data_verify"
    config.dataset = config_dict.placeholder(str)  # dataset root folder (required)
    config.format = arg or "auto"   # 'auto' detects; or a name of radgan_jax.data.readers (e.g. chaos_nifti)
    config.quarantine = False       # move every file with a problem aside
    config.quarantine_dir = ""      # default: WORKDIR/quarantine (must lie outside the dataset)
    config.reader_options = ""      # 'key=value,key=value' passed to the reader (see its docstring)
    config.progress = True          # tqdm bar over the items
    config.max_listed = 50          # files listed per problem kind in the printed report (the JSON has all)
    return config
