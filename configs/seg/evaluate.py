"""nnU-Net v2 evaluation: a folder of predictions (nnUNetv2_evaluate_folder), or the cross-validation of seg_train
folds with nnU-Net's postprocessing decision (nnUNetv2_find_best_configuration's accumulate_cv_results +
determine_postprocessing for the 2d configuration).

    python -m radgan_jax.main --config=configs/seg/evaluate.py --workdir=OUT \
        --config.predictions=PRED_DIR --config.reference=RAW_DATASET_DIR
    python -m radgan_jax.main --config=configs/seg/evaluate.py --workdir=OUT \
        --config.cv_models=runs/fold0,runs/fold1,runs/fold2,runs/fold3,runs/fold4 --config.plans=PLANS_DIR

`reference`: a raw dataset dir (its labelsTr) or a folder of label files; in cv mode it defaults to the raw dataset
named by PLANS_DIR/raw_dataset.json. Outputs: see radgan_jax/jobs/seg_evaluate.py.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/seg/evaluate.py takes no arg, got {arg!r}")
    config = ml_collections.ConfigDict()
    config.mode = "seg_evaluate"
    config.predictions = ""     # (a) folder of CASE<file_ending> predictions (e.g. a seg_predict workdir)
    config.reference = ""       # raw dataset dir or labels folder
    config.cv_models = ""       # (b) comma-separated seg_train workdirs, one per fold
    config.plans = ""           # seg_plan output dir: dataset.json, plans, raw_dataset.json
    config.dataset_json = ""    # explicit dataset.json (labels, ignore label, file_ending)
    config.chill = False        # (a) allow reference cases without prediction (nnUNetv2_evaluate_folder --chill)
    config.postprocessing = True  # (b) determine keep-largest-component postprocessing -> postprocessing.json
    config.plot = True          # OUT/dice.png
    return config
