"""User docs that are generated from code stay in sync with it."""

from __future__ import annotations

from radgan_jax.data.readers import names
from radgan_jax.tools import data_formats


def test_data_md_formats_section_is_up_to_date():
    assert data_formats.main(["--check"]) == 0, "run: python -m radgan_jax.tools.data_formats"


def test_every_format_is_documented():
    text = data_formats.DEFAULT_DOC.read_text()
    for name in names():
        assert f"### `{name}`" in text
