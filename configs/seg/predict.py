"""nnUNetv2_predict with seg_train models: sliding window (Gaussian, step 0.5), mirroring TTA, fold ensemble.

    python -m radgan_jax.main --config=configs/seg/predict.py --workdir=OUT --config.input=RAW/imagesTs \
        --config.models=runs/fold0,runs/fold1,runs/fold2,runs/fold3,runs/fold4 --config.plans=PLANS_DIR

`input`: a folder of CASE_XXXX<file_ending> images (a raw dataset's imagesTs/ or imagesTr/). `models`: seg_train
workdirs, one per fold; their logits are averaged as nnUNetv2_predict does (`ensemble='probabilities'`: average the
softmax probabilities instead, nnUNetv2_ensemble's rule). `plans`: the seg_plan output the models were trained on
(may stay empty when the first model dir holds plans.json + dataset.json). `postprocessing`: a postprocessing.json
written by seg_evaluate (cv_models mode), applied to every prediction ('' = none, nnU-Net's default: postprocessing
is a separate step there, nnUNetv2_apply_postprocessing). Outputs: see radgan_jax/jobs/seg_predict.py.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/seg/predict.py takes no arg, got {arg!r}")
    config = ml_collections.ConfigDict()
    config.mode = "seg_predict"
    config.input = ""                # folder of CASE_XXXX<file_ending> images
    config.models = ""               # comma-separated seg_train workdirs (one per fold)
    config.checkpoint = "final"      # 'final' (nnU-Net's default checkpoint_final) or 'best'
    config.plans = ""                # seg_plan output dir; '' = the first model dir's plans.json + dataset.json
    config.tta = True                # mirroring test-time augmentation (nnU-Net: on unless --disable_tta)
    config.step_size = 0.5           # tile step as a fraction of the patch size (nnU-Net -step_size)
    config.tile_batch = 8            # tiles per network call (memory only; the result does not depend on it)
    config.accumulate_dtype = "float16"  # nnU-Net accumulates the tiles in half precision; 'float32' is exact-er
    config.ensemble = "logits"       # 'logits' (nnUNetv2_predict) or 'probabilities' (nnUNetv2_ensemble)
    config.postprocessing = ""       # postprocessing.json from seg_evaluate; '' = none
    config.save_probabilities = False  # CASE.npz (probabilities [K, Z, Y, X]) + CASE.json (properties)
    config.overlays = True           # OUT/overlays/CASE.png
    config.progress = True
    return config
