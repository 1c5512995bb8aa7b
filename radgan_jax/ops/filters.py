"""Low-pass FIR filter design for alias-free layers (StyleGAN3, Karras et al. 2021, Sec. 3.2).

Filters are designed once on the host in float64 with scipy and cast to float32, exactly as the
original's `SynthesisLayer.design_lowpass_filter` does; they are constants of the layer spec, not
parameters, so they never appear in a checkpoint.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.signal
import scipy.special


@functools.cache
def _design(numtaps: int, cutoff: float, width: float, fs: float, radial: bool) -> np.ndarray | None:
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None  # identity filter: the original stores `None` (absent from the state_dict)
    if not radial:
        # Separable Kaiser-windowed sinc.
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return np.asarray(taps, dtype=np.float32)
    # Radially symmetric jinc-based filter (StyleGAN3-R, Appendix D).
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    f[r == 0] = cutoff  # limit of j1(2*pi*c*r)/(pi*r) at r -> 0
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return np.asarray(f, dtype=np.float32)


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> np.ndarray | None:
    """Returns a float32 low-pass FIR filter ([taps] separable, [taps, taps] radial) or None (identity).

    Read-only: the result is cached, so callers must not modify it in place.
    """
    f = _design(int(numtaps), float(cutoff), float(width), float(fs), bool(radial))
    if f is not None:
        f.setflags(write=False)
    return f
