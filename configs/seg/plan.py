"""nnU-Net v2 planning of a 2D segmentation dataset (what `nnUNetv2_plan_and_preprocess -d ID -c 2d` computes).

    python -m radgan_jax.main --config=configs/seg/plan.py --workdir=OUT [--config.dataset=RAW_DATASET_DIR]
    python -m radgan_jax.main --config=configs/seg/plan.py:RAW_DATASET_DIR --workdir=OUT

RAW_DATASET_DIR is an nnU-Net v2 raw dataset (DatasetXXX_Name with dataset.json, imagesTr, labelsTr), e.g. one
written by configs/data/convert.py. Without a dataset the built-in phantom task (`builtin`) is written to
OUT/raw and planned. Writes OUT/dataset_fingerprint.json, OUT/nnUNetPlans.json, OUT/dataset.json and, with
preprocess=True, OUT/nnUNetPlans_2d/CASE.npz (data, seg) + CASE.json (properties) per case.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "seg_plan"
    config.dataset = arg or ""          # raw dataset folder; empty: the built-in task below
    config.out = ""                     # output folder; empty: WORKDIR
    config.preprocess = True            # also write nnUNetPlans_2d/ (nnU-Net's DefaultPreprocessor)
    config.num_workers = 4              # processes for fingerprint + preprocessing (0: in this process)
    config.progress = True
    config.gpu_memory_target_gb = 8.0   # nnUNetv2_plan_experiment -gpu_memory_target (patch/batch size rule)
    config.plans_name = "nnUNetPlans"
    # --- built-in task (used when dataset is empty): synthetic phantoms -> OUT/raw/Dataset<id>_<name>
    config.builtin = "phantoms"         # 'phantoms', or '' to require a dataset
    config.builtin_kind = "ct_abdomen"  # radgan_jax.data.phantoms kind
    config.builtin_num = 40
    config.builtin_resolution = 128
    config.builtin_dataset_id = 990
    return config
