"""Test setup shared by every test: 8 fake CPU devices, and where the golden/real data lives.

The environment must be set before jax is imported anywhere, which is why it happens at module import
of this conftest (pytest imports it before collecting test modules).
"""

from __future__ import annotations

import os
import pathlib

_FORCE_DEVICES = "--xla_force_host_platform_device_count=8"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {_FORCE_DEVICES}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """`$RADGAN_SHARED` (default `<repo>/../shared`): golden tensors and real data. Skips when absent."""
    path = pathlib.Path(os.environ.get("RADGAN_SHARED", REPO_ROOT.parent / "shared"))
    if not path.is_dir():
        pytest.skip(f"RADGAN_SHARED={path} not found: golden/real-data tests need ../shared")
    return path


@pytest.fixture(scope="session")
def golden_dir(shared_dir: pathlib.Path) -> pathlib.Path:
    return shared_dir / "golden"
