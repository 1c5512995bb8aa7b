"""nnU-Net v2's intensity normalization schemes (numpy; preprocessing runs once, on the host).

Reproduces nnunetv2/preprocessing/normalization/default_normalization_schemes.py and the channel-name lookup of
map_channel_name_to_normalization.py. Schemes are found by nnU-Net's class name (the name a plans file stores
under `normalization_schemes`) in `SCHEMES`; channel names map to a scheme in `CHANNEL_NAME_TO_SCHEME`
(case-insensitive, anything else is ZScoreNormalization).

Every scheme works on one channel in float32 (nnU-Net's default target dtype) with nnU-Net's eps (1e-8) and
its order of float32 operations, so results agree bit for bit with nnU-Net on the same input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

_EPS = 1e-8  # default_normalization_schemes.py: eps for float32 targets


class Normalization:
    """Base: `run(image, seg)` -> normalized float32 image of the same shape (one channel).

    `use_mask_for_norm`: normalize only where seg >= 0 (the nonzero region crop_to_nonzero leaves at >= 0).
    `intensity_properties`: the fingerprint's foreground_intensity_properties_per_channel entry of the channel.
    `leaves_outside_at_zero` is nnU-Net's `leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true`: the
    planner turns use_mask_for_norm on only for schemes where it is True.
    """

    name: ClassVar[str] = ""
    leaves_outside_at_zero: ClassVar[bool] = False

    def __init__(self, use_mask_for_norm: bool = False, intensity_properties: Mapping[str, float] | None = None):
        self.use_mask_for_norm = bool(use_mask_for_norm)
        self.intensity_properties = dict(intensity_properties or {})

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError


SCHEMES: dict[str, type[Normalization]] = {}


def register(cls: type[Normalization]) -> type[Normalization]:
    """Class decorator: adds a scheme to `SCHEMES` under its nnU-Net class name."""
    SCHEMES[cls.name] = cls
    return cls


@register
class ZScoreNormalization(Normalization):
    """(x - mean) / max(std, eps) of this image; with use_mask_for_norm only inside seg >= 0 (outside stays 0
    after cropping, as nnU-Net's comment on BraTS explains)."""

    name = "ZScoreNormalization"
    leaves_outside_at_zero = True

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        image = image.astype(np.float32, copy=False)
        if self.use_mask_for_norm:
            if seg is None:
                raise ValueError("ZScoreNormalization with use_mask_for_norm needs seg (mask = seg >= 0)")
            mask = seg >= 0
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (values - mean) / max(std, _EPS)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, _EPS)
        return image


@register
class CTNormalization(Normalization):
    """Clip to the dataset's foreground percentiles 0.5 / 99.5, then (x - mean) / std of the dataset's
    foreground (fingerprint values): the same mapping for every image."""

    name = "CTNormalization"

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        props = self.intensity_properties
        missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in props]
        if missing:
            raise ValueError(f"CTNormalization needs the fingerprint's intensity properties; missing {missing}")
        image = image.astype(np.float32, copy=False)
        np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
        image -= props["mean"]
        image /= max(props["std"], _EPS)
        return image


@register
class NoNormalization(Normalization):
    name = "NoNormalization"

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        return image.astype(np.float32, copy=False)


@register
class RescaleTo01Normalization(Normalization):
    """(x - min) / max(max - min, eps) of this image."""

    name = "RescaleTo01Normalization"

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        image = image.astype(np.float32, copy=False)
        image -= image.min()
        image /= np.clip(image.max(), a_min=_EPS, a_max=None)
        return image


@register
class RGBTo01Normalization(Normalization):
    """x / 255 for 8-bit colour channels (channel name 'rgb_to_0_1'); values outside 0..255 are an error."""

    name = "RGBTo01Normalization"

    def run(self, image: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"RGBTo01Normalization expects 8-bit RGB values in 0..255, found {lo}..{hi}")
        image = image.astype(np.float32, copy=False)
        image /= 255.0
        return image


# map_channel_name_to_normalization.py: channel_names value (casefolded) -> scheme; default z-score.
CHANNEL_NAME_TO_SCHEME: dict[str, str] = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}
DEFAULT_SCHEME = "ZScoreNormalization"


def scheme_for_channel(channel_name: str) -> type[Normalization]:
    """nnU-Net's get_normalization_scheme: the scheme class for a dataset.json channel name."""
    return SCHEMES[CHANNEL_NAME_TO_SCHEME.get(str(channel_name).casefold(), DEFAULT_SCHEME)]


def get_scheme(name: str) -> type[Normalization]:
    """Scheme class by nnU-Net class name (as stored in a plans file); KeyError lists the known names."""
    if name not in SCHEMES:
        raise KeyError(f"unknown normalization scheme {name!r}; known: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name]


def normalize(data: np.ndarray, seg: np.ndarray | None, schemes: list[str], use_mask_for_norm: list[bool],
              intensity_properties: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """DefaultPreprocessor._normalize: channel c of `data` (C, ...) float32 through schemes[c], in place.

    `intensity_properties` is keyed by channel index as a string ('0', '1', ...), as in the plans file.
    """
    if len(schemes) != data.shape[0] or len(use_mask_for_norm) != data.shape[0]:
        raise ValueError(f"data has {data.shape[0]} channel(s) but the plan lists {len(schemes)} normalization "
                         f"scheme(s) and {len(use_mask_for_norm)} use_mask_for_norm value(s)")
    mask_seg = None if seg is None else seg[0]
    for c in range(data.shape[0]):
        props = intensity_properties.get(str(c), intensity_properties.get(c, {}))  # type: ignore[call-overload]
        scheme = get_scheme(schemes[c])(use_mask_for_norm=use_mask_for_norm[c], intensity_properties=props)
        data[c] = scheme.run(data[c], mask_seg)
    return data
