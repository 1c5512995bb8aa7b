"""User docs that are generated from code stay in sync with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from radgan_jax import jobs
from radgan_jax.data.readers import names
from radgan_jax.tools import data_formats


def test_data_md_formats_section_is_up_to_date():
    assert data_formats.main(["--check"]) == 0, "run: python -m radgan_jax.tools.data_formats"


def test_every_format_is_documented():
    text = data_formats.DEFAULT_DOC.read_text()
    for name in names():
        assert f"### `{name}`" in text


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_every_job_mode_is_listed(doc, repo_root):
    # Both docs list the modes by hand; this keeps them from falling behind jobs._MODULES again.
    text = (Path(repo_root) / doc).read_text()
    missing = [mode for mode in jobs.names() if f"`{mode}`" not in text]
    assert not missing, f"{doc} does not list the registered modes {missing}"
