"""Small helpers shared by tests."""

from __future__ import annotations

from typing import Any

import jax


def jit_apply(module: Any, variables: Any, *arrays: Any, **options: Any) -> Any:
    """`module.apply(variables, *arrays, **options)` under `jax.jit`.

    Arrays are traced; keyword options (truncation_psi, method, mutable, transform, ...) are closed over, so
    they stay Python values. Why: run eagerly, the generator's upfirdn2d (fused shifted-slice sums, many small
    ops) dispatches op by op and takes minutes on CPU instead of seconds.
    """
    return jax.jit(lambda v, *a: module.apply(v, *a, **options))(variables, *arrays)
