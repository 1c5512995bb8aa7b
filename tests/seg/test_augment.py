"""nnU-Net v2 2D training augmentation (radgan_jax.seg.augment) against nnunetv2 2.8.1 / batchgeneratorsv2 0.3.6.

The reference pipeline is nnU-Net's own `get_training_transforms`; its random draws are replaced by ours
(monkey-patched `get_parameters`, forced rotation/scale ranges), so both sides run the same parameters.
Layouts: ours [H, W, C] / [H, W, 1], torch [C, H, W] / [1, H, W].
"""

from __future__ import annotations

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from radgan_jax.seg import augment as A
from radgan_jax.seg import augment_spatial as AS
from radgan_jax.seg import losses as L

torch = pytest.importorskip("torch")
pytest.importorskip("batchgeneratorsv2")

S_IN, PATCH, C = (75, 68), (64, 56), 2
STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]
DATA_ATOL = 1e-4  # float32 rounding (torch fuses multiply-adds differently, sums in another order)


@pytest.fixture(scope="module", autouse=True)
def _nnunet_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        mp.setenv(v, str(tmp_path_factory.mktemp(v)))
    yield
    mp.undo()


def _trainer():
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    return nnUNetTrainer


def _sample(seed: int, labels: int = 3, pad_rows: int = 6):
    """Smooth 2-channel image, blob label map with `labels` labels and a -1 band (data-loader padding)."""
    r = np.random.default_rng(seed)
    data = gaussian_filter(r.standard_normal((C, *S_IN)), 2, axes=(1, 2)) * 3 + r.uniform(-1, 1, (C, 1, 1))
    seg = np.argmax(gaussian_filter(r.standard_normal((labels, *S_IN)), 4, axes=(1, 2)), 0).astype(np.int16)
    seg[:pad_rows] = -1
    data[:, :pad_rows] = 0
    return data.astype(np.float32), seg[None]


def _cfg(**kw) -> A.AugmentConfig:
    rot = AS.rotation_for_da(PATCH)
    return dataclasses.replace(A.AugmentConfig(PATCH, S_IN, rot, mask_channels=(0,)), **kw)


@functools.cache
def _jitted_apply():
    return jax.jit(functools.partial(A.apply_params, cfg=_cfg()))


def _off_params(seed: int = 0) -> dict:
    """Our drawn parameters with every transform switched off (spatial -> plain crop, no mirroring)."""
    p = dict(A.sample_params(jax.random.key(seed), _cfg(), C))
    for k in list(p):
        if k.startswith("do_"):
            p[k] = jnp.asarray(False)
    p |= {"angle": jnp.float32(0), "scale": jnp.ones(2, jnp.float32), "mirror": jnp.zeros(2, bool)}
    return p


def _reference(p: dict, data: np.ndarray, seg: np.ndarray, ds: bool = False):
    """nnU-Net's 2D pipeline with our parameters `p` forced into every transform."""
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    scales = [list(v) for v in L.deep_supervision_scales(STRIDES)] if ds else None
    pipe = _trainer().get_training_transforms(PATCH, AS.rotation_for_da(PATCH), scales, (0, 1), False,
                                              use_mask_for_norm=[True, False])
    f = lambda k: np.asarray(p[k]).tolist()
    on = lambda k: bool(p[k])
    idx = lambda mask: torch.as_tensor(np.nonzero(np.asarray(mask))[0])
    for t in pipe.transforms:
        inner = t.transform if isinstance(t, RandomTransform) else t
        params = None
        if isinstance(inner, SpatialTransform):
            t.p_rotation, t.rotation = float(on("do_rotation")), (f("angle"),) * 2
            t.p_scaling, t.scaling = float(on("do_scaling")), (f("scale")[0],) * 2
            continue
        if isinstance(inner, GaussianNoiseTransform):
            name = "do_noise"
        elif isinstance(inner, GaussianBlurTransform):
            m = np.asarray(p["blur_channels"])
            name, params = "do_blur", {"apply_to_channel": torch.as_tensor(m.copy()),
                                       "sigmas": [f("blur_sigma")[c] for c in np.nonzero(m)[0]]}
        elif isinstance(inner, MultiplicativeBrightnessTransform):
            name, params = "do_brightness", {"apply_to_channel": idx([1] * C),
                                             "multipliers": torch.tensor(f("brightness"))}
        elif isinstance(inner, ContrastTransform):
            name, params = "do_contrast", {"apply_to_channel": idx([1] * C), "multipliers": torch.tensor(f("contrast"))}
        elif isinstance(inner, SimulateLowResolutionTransform):
            m = np.asarray(p["lowres_channels"])
            s = [[f("lowres_scale")[c]] * 2 for c in np.nonzero(m)[0]]
            name, params = "do_lowres", {"apply_to_channel": idx(m), "scales": torch.tensor(s).reshape(-1, 2)}
        elif isinstance(inner, GammaTransform):
            name = "do_gamma_inverted" if inner.p_invert_image == 1 else "do_gamma"
            gk = name[3:]
            params = {"apply_to_channel": idx([1] * C), "retain_stats": torch.ones(C, dtype=bool),
                      "invert_image": torch.full((C,), gk == "gamma_inverted"), "gamma": torch.tensor(f(gk))}
        elif isinstance(inner, MirrorTransform):
            params = {"axes": [d for d in range(2) if f("mirror")[d]]}
            inner.get_parameters = lambda _p=params, **_: _p
            continue
        else:
            continue
        inner.get_parameters = lambda _p=params, **_: _p
        t.get_parameters = lambda _n=name, **_: {"apply_transform": on(_n)}
    out = pipe(image=torch.from_numpy(data.copy()), segmentation=torch.from_numpy(seg.copy()))
    return out["image"].numpy(), out["segmentation"]


def _ours(p: dict, data: np.ndarray, seg: np.ndarray):
    d, s = _jitted_apply()(jnp.asarray(data.transpose(1, 2, 0)), jnp.asarray(seg.transpose(1, 2, 0)), p)
    return np.asarray(d).transpose(2, 0, 1), np.asarray(s).transpose(2, 0, 1)


FORCED = {
    "crop": {},
    "rotation": {"do_rotation": True, "angle": 0.6},
    "rotation_neg_large": {"do_rotation": True, "angle": -2.7},
    "scale_up": {"do_scaling": True, "scale": [1.37, 1.37]},
    "scale_down": {"do_scaling": True, "scale": [0.72, 0.72]},
    "rotation_scale": {"do_rotation": True, "angle": 1.9, "do_scaling": True, "scale": [1.21, 1.21]},
    "blur": {"do_blur": True, "blur_channels": [True, False], "blur_sigma": [[0.93, 0.51], [0.7, 0.7]]},
    "blur_both": {"do_blur": True, "blur_channels": [True, True], "blur_sigma": [[0.5, 1.0], [0.77, 0.61]]},
    "brightness": {"do_brightness": True, "brightness": [0.8, 1.2]},
    "contrast": {"do_contrast": True, "contrast": [0.76, 1.24]},
    "lowres": {"do_lowres": True, "lowres_channels": [True, True], "lowres_scale": [0.52, 0.83]},
    "lowres_one": {"do_lowres": True, "lowres_channels": [False, True], "lowres_scale": [0.6, 0.66]},
    "gamma_inverted": {"do_gamma_inverted": True, "gamma_inverted": [0.72, 1.45]},
    "gamma": {"do_gamma": True, "gamma": [1.3, 0.8]},
    "mirror_0": {"mirror": [True, False]},
    "mirror_01": {"mirror": [True, True]},
}


def _forced(overrides: dict) -> dict:
    p = _off_params()
    for k, v in overrides.items():
        p[k] = jnp.asarray(v, p[k].dtype)
    return p


@pytest.mark.parametrize("name", sorted(FORCED))
def test_forced_transform_matches_batchgeneratorsv2(name):
    """Each transform alone, same parameters on both sides: data within DATA_ATOL, seg exactly equal."""
    data, seg = _sample(1)
    p = _forced(FORCED[name])
    ref_d, ref_s = _reference(p, data, seg)
    our_d, our_s = _ours(p, data, seg)
    assert our_d.shape == ref_d.shape == (C, *PATCH)
    np.testing.assert_allclose(our_d, ref_d, atol=DATA_ATOL, rtol=0)
    np.testing.assert_array_equal(our_s, ref_s.numpy())
    if name != "crop":  # the transform did something
        assert np.abs(our_d - _ours(_off_params(), data, seg)[0]).max() > 1e-2


@pytest.mark.parametrize("seed", range(6))
def test_composed_pipeline_matches_nnunet(seed):
    """Our drawn parameters (every transform but noise on, random angles/scales, 2-5 labels) through nnU-Net's
    composed 2D pipeline incl. MaskImage, RemoveLabel and DownsampleSegForDS: same data and seg."""
    p = dict(A.sample_params(jax.random.key(100 + seed), _cfg(p_rotation=1.0, p_scaling=1.0), C))
    for k in p:
        if k.startswith("do_"):
            p[k] = jnp.asarray(k != "do_noise" and (k != "do_scaling" or seed % 2 == 0))
    if seed % 2:
        p["scale"] = jnp.ones(2, jnp.float32)  # rotation only
    data, seg = _sample(seed, labels=2 + seed % 4, pad_rows=6 * (seed % 3))
    ref_d, ref_s = _reference(p, data, seg, ds=True)
    our_d, our_s = _ours(p, data, seg)
    np.testing.assert_allclose(our_d, ref_d, atol=DATA_ATOL, rtol=0)
    our_ds = L.downsample_seg_for_ds(jnp.asarray(our_s.transpose(1, 2, 0))[None], L.deep_supervision_scales(STRIDES))
    assert len(our_ds) == len(ref_s) == 3
    for o, r in zip(our_ds, ref_s):
        np.testing.assert_array_equal(np.asarray(o)[0].transpose(2, 0, 1), r.numpy())


def test_resample_seg_exact_on_torch_grid_and_tie_rules():
    """Seg resampling fed nnU-Net's own grid (so the coordinates are identical): exact, incl. exact ties.

    Scale 0.5 without rotation puts sample points exactly between pixels: ties at 500 for two labels and
    between three labels, settled by the nearest neighbour; 1.37 reaches outside (padding label -1 enters)."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    for i, (angle, scale, labels) in enumerate([(0.0, 0.5, 2), (0.0, 0.5, 4), (0.4, 1.37, 3), (-1.1, 0.9, 5),
                                                (0.0, 1.5, 1)]):
        _, seg = _sample(10 + i, labels=labels, pad_rows=0)
        st = SpatialTransform(PATCH, 0, False, p_rotation=1, rotation=(angle, angle), p_scaling=1,
                              scaling=(scale, scale), p_synchronize_scaling_across_axes=1,
                              border_mode_seg="constant", padding_value_seg=-1)
        prm = st.get_parameters(image=torch.zeros((1, *S_IN)))
        ref = st._apply_to_segmentation(torch.from_numpy(seg), **prm)[0].numpy()
        grid = jnp.asarray(prm["grid"].numpy()[..., ::-1].copy())  # grid_sample's (x, y) -> (axis0, axis1)
        coords = AS.normalized_to_pixel(grid, S_IN)
        ours = np.asarray(AS.resample_seg(jnp.asarray(seg.transpose(1, 2, 0)), coords))[..., 0]
        np.testing.assert_array_equal(ours, ref)
        assert set(np.unique(ours)) <= set(np.unique(seg)) | {-1}


def test_gaussian_noise_statistics():
    """Noise is random on both sides: same per-channel std (nnU-Net's noise_variance is used as std), all
    channels, independent per channel."""
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    sigma = 0.07
    data, seg = _sample(3)
    p = _forced({"do_noise": True, "noise_std": sigma})
    base = _ours(_off_params(), data, seg)[0]
    ours = _ours(p, data, seg)[0] - base
    t = GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True)
    img = torch.from_numpy(base.copy())
    ref = t._apply_to_image(img.clone(), apply_mask=torch.ones(C, dtype=bool), apply_idx=torch.arange(C),
                            num_apply=C, sigmas=sigma).numpy() - base
    n = ours[0].size
    for x in (ours, ref):
        for c in range(C):
            assert abs(x[c].std() / sigma - 1) < 5 / np.sqrt(2 * n)
            assert abs(x[c].mean()) < 5 * sigma / np.sqrt(n)
        assert abs(np.corrcoef(x[0].ravel(), x[1].ravel())[0, 1]) < 5 / np.sqrt(n)


def test_config_matches_nnunet_pipeline():
    """Every probability / range in AugmentConfig equals the one in nnU-Net's built pipeline object."""
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    for patch in [(64, 56), (512, 128)]:
        cfg = A.augment_config_from_plan({"patch_size": list(patch), "use_mask_for_norm": [False, True]})
        pipe = _trainer().get_training_transforms(patch, cfg.rotation, None, cfg.mirror_axes, False,
                                                  use_mask_for_norm=[False, True])
        t = {type(x.transform if isinstance(x, RandomTransform) else x).__name__ + ("_inv" if getattr(
            getattr(x, "transform", None), "p_invert_image", 0) == 1 else ""): x for x in pipe.transforms}
        sp = t["SpatialTransform"]
        assert (sp.p_rotation, tuple(sp.rotation), sp.p_scaling, tuple(sp.scaling),
                sp.p_synchronize_scaling_across_axes, sp.p_elastic_deform, sp.random_crop, sp.padding_value_seg,
                sp.border_mode_seg, sp.mode_seg, sp.mode_image, sp.padding_mode_image, sp.align_corners) == (
            cfg.p_rotation, cfg.rotation, cfg.p_scaling, cfg.scaling, cfg.p_synchronize_scaling_across_axes,
            0, False, AS.PAD_LABEL, "constant", "bilinear", "bilinear", "zeros", False)
        assert tuple(sp.patch_size) == patch and sp.seg_tiebreak == "nearest" and not sp.bg_style_seg_sampling
        pairs = [("GaussianNoiseTransform", cfg.p_noise), ("GaussianBlurTransform", cfg.p_blur),
                 ("MultiplicativeBrightnessTransform", cfg.p_brightness), ("ContrastTransform", cfg.p_contrast),
                 ("SimulateLowResolutionTransform", cfg.p_lowres), ("GammaTransform_inv", cfg.p_gamma_inverted),
                 ("GammaTransform", cfg.p_gamma)]
        for name, prob in pairs:
            assert t[name].apply_probability == prob, name
        n, b = t["GaussianNoiseTransform"].transform, t["GaussianBlurTransform"].transform
        assert (tuple(n.noise_variance), n.p_per_channel, n.synchronize_channels) == (cfg.noise_std, 1, True)
        assert (tuple(b.blur_sigma), b.p_per_channel, b.synchronize_axes, b.synchronize_channels) == (
            cfg.blur_sigma, cfg.blur_p_per_channel, False, False)
        lr = t["SimulateLowResolutionTransform"].transform
        assert (tuple(lr.scale), lr.p_per_channel, lr.synchronize_axes, lr.synchronize_channels, lr.ignore_axes,
                lr.allowed_channels) == (cfg.lowres_scale, cfg.lowres_p_per_channel, True, False, None, None)
        assert t["MultiplicativeBrightnessTransform"].transform.multiplier_range.contrast_range == \
            cfg.brightness_range
        ct = t["ContrastTransform"].transform
        assert (ct.contrast_range.contrast_range, ct.preserve_range) == (cfg.contrast_range, True)
        for name, inv in (("GammaTransform_inv", 1), ("GammaTransform", 0)):
            g = t[name].transform
            assert (g.gamma.contrast_range, g.p_invert_image, g.p_retain_stats, g.p_per_channel) == (
                cfg.gamma_range, inv, 1, 1)
        assert tuple(t["MirrorTransform"].allowed_axes) == cfg.mirror_axes
        assert t["MaskImageTransform"].apply_to_channels == list(cfg.mask_channels) == [1]
        assert (t["RemoveLabelTransform"].label_value, t["RemoveLabelTransform"].set_to) == (-1, 0)


def test_sampling_probabilities():
    """Over 20000 keys each flag fires at nnU-Net's rate (5-sigma binomial band); draws stay in range."""
    cfg = _cfg()
    n = 20000
    p = jax.jit(jax.vmap(lambda k: A.sample_params(k, cfg, 3)))(jax.random.split(jax.random.key(7), n))
    p = {k: np.asarray(v) for k, v in p.items() if k != "noise_key"}
    expect = {"do_rotation": cfg.p_rotation, "do_scaling": cfg.p_scaling, "do_noise": cfg.p_noise,
              "do_blur": cfg.p_blur, "blur_channels": cfg.blur_p_per_channel, "do_brightness": cfg.p_brightness,
              "do_contrast": cfg.p_contrast, "do_lowres": cfg.p_lowres, "lowres_channels": cfg.lowres_p_per_channel,
              "do_gamma_inverted": cfg.p_gamma_inverted, "do_gamma": cfg.p_gamma, "mirror": 0.5}
    for k, prob in expect.items():
        m = p[k].size
        assert abs(p[k].mean() - prob) < 5 * np.sqrt(prob * (1 - prob) / m), (k, p[k].mean(), prob)
    # flags are independent of each other (e.g. rotation vs scaling, the two gammas)
    both = (p["do_rotation"] & p["do_scaling"]).mean()
    assert abs(both - 0.04) < 5 * np.sqrt(0.04 * 0.96 / n)
    rot = p["angle"][p["do_rotation"]]
    assert np.all(np.abs(rot) <= np.pi) and abs(rot.mean()) < 0.15 and np.abs(rot).max() > 3.1
    assert np.all(p["angle"][~p["do_rotation"]] == 0)
    sc = p["scale"][p["do_scaling"]]
    assert np.all(sc[:, 0] == sc[:, 1]) and sc.min() >= 0.7 and sc.max() <= 1.4  # synchronised across axes
    assert np.all(p["scale"][~p["do_scaling"]] == 1)
    assert p["noise_std"].min() >= 0 and p["noise_std"].max() <= 0.1
    assert p["blur_sigma"].min() >= 0.5 and p["blur_sigma"].max() <= 1.0
    assert p["lowres_scale"].min() >= 0.5 and p["lowres_scale"].max() <= 1.0
    for k, (lo, hi) in (("brightness", cfg.brightness_range), ("contrast", cfg.contrast_range),
                        ("gamma", cfg.gamma_range), ("gamma_inverted", cfg.gamma_range)):
        x = p[k]
        below = (x < 1).mean()  # BGContrast: half the draws from (lo, 1), half from (1, hi)
        assert abs(below - 0.5) < 5 * np.sqrt(0.25 / x.size) and x.min() >= lo and x.max() <= hi
        assert abs(np.median(x[x > 1]) - (1 + hi) / 2) < 0.01


def test_pipeline_jit_vmap_shapes_labels_determinism():
    cfg = _cfg(p_rotation=0.5, p_scaling=0.5)
    rows = [_sample(20 + i, labels=3) for i in range(6)]
    data = jnp.asarray(np.stack([d.transpose(1, 2, 0) for d, _ in rows]))
    seg = jnp.asarray(np.stack([s.transpose(1, 2, 0) for _, s in rows]))
    keys = jax.random.split(jax.random.key(3), 6)
    fn = jax.jit(jax.vmap(functools.partial(A.augment, cfg=cfg)))
    d1, s1 = fn(keys, data, seg)
    d2, s2 = fn(keys, data, seg)
    assert d1.shape == (6, *PATCH, C) and d1.dtype == jnp.float32
    assert s1.shape == (6, *PATCH, 1) and s1.dtype == seg.dtype
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    d0, s0 = jax.jit(functools.partial(A.augment, cfg=cfg))(keys[0], data[0], seg[0])  # un-vmapped row 0
    np.testing.assert_allclose(np.asarray(d0), np.asarray(d1[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(s0), np.asarray(s1[0]))
    assert set(np.unique(np.asarray(s1))) <= {0, 1, 2}  # -1 removed, nothing interpolated between labels
    assert not np.allclose(np.asarray(d1[0]), np.asarray(d1[1]))
    d3, _ = fn(jax.random.split(jax.random.key(4), 6), data, seg)
    assert not np.allclose(np.asarray(d1), np.asarray(d3))


@pytest.mark.parametrize("patch", [(256, 256), (320, 256), (512, 128), (64, 96), (40, 200), (448, 384)])
def test_initial_patch_size_matches_nnunet(patch):
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    fake = types.SimpleNamespace(configuration_manager=types.SimpleNamespace(patch_size=list(patch)),
                                 print_to_log_file=lambda *a, **k: None)
    rot, dummy, init, mirror = _trainer().configure_rotation_dummyDA_mirroring_and_inital_patch_size(fake)
    cfg = A.augment_config_from_plan({"configurations": {"2d": {"patch_size": list(patch)}}})
    assert cfg.rotation == tuple(rot) and not dummy and cfg.mirror_axes == tuple(mirror)
    assert cfg.initial_patch_size == tuple(int(v) for v in init)
    assert AS.initial_patch_size(patch, rot, (0.7, 1.4)) == tuple(get_patch_size(patch, rot, rot, rot, (0.7, 1.4)))


def test_plan_errors():
    with pytest.raises(ValueError, match="2D patch_size"):
        A.augment_config_from_plan({"patch_size": [32, 32, 32]})
    with pytest.raises(ValueError, match="no '2d' configuration"):
        A.augment_config_from_plan({"configurations": {"3d_fullres": {}}})
    with pytest.raises(ValueError, match=r"data \[H, W, C\]"):
        A.augment(jax.random.key(0), jnp.zeros((4, 8, 8)), jnp.zeros((1, 8, 8), jnp.int16), _cfg())
