"""convert_stylegan_xl: .npz + config.json and network pickles -> checkpoint; clear refusals and errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.checkpoint import load_generator
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.tools.convert_stylegan_xl import ConversionError, convert, main
from tests.jax_utils import jit_apply


class _Payload:
    """Pickles as a call of os.system: the stock unpickler would run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_npz_conversion_round_trip(golden_dir: Path, tmp_path: Path):
    src = golden_dir / "stylegan_xl_16"
    spec = convert(src / "params.npz", tmp_path / "ck")
    spec2, variables, meta = load_generator(tmp_path / "ck")
    assert spec2 == spec and spec.img_resolution == 16 and spec.c_dim == 4
    assert meta["source"].endswith("params.npz") and len(meta["source_sha256"]) == 64
    z, c = np.load(src / "z.npy"), np.load(src / "c.npy")
    img = np.asarray(jit_apply(Generator(spec2), variables, z, c)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(img, np.load(src / "img_psi1.0_const.npy"), atol=1e-5)


def test_cli_errors_name_the_file(golden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    g16, g32 = golden_dir / "stylegan_xl_16", golden_dir / "stylegan_xl_32"
    lonely = tmp_path / "lonely.npz"
    shutil.copy(g16 / "params.npz", lonely)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    (tmp_path / "weights.pt").write_bytes(b"x")
    cases = [
        (["--src", str(tmp_path / "missing.npz")], "missing.npz: no such file"),
        (["--src", str(lonely)], "needs its config.json"),
        (["--src", str(lonely), "--config", str(bad_json)], "bad.json: not valid JSON"),
        (["--src", str(tmp_path / "weights.pt")], "unknown source type '.pt'"),
        # 16 px weights with the 32 px config: the mismatch is reported, not a shape error deep in Flax.
        (["--src", str(g16 / "params.npz"), "--config", str(g32 / "config.json")], "params.npz"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("convert_stylegan_xl: error:") and message in err, err
    assert not (tmp_path / "out").exists()


def test_payload_pickle_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    src = tmp_path / "network-snapshot.pkl"
    src.write_bytes(pickle.dumps({"G_ema": None, "training_set_kwargs": {"x": _Payload(marker)}}))
    with pytest.raises(ConversionError, match=r"refused: the pickle names (os|posix)\.system"):
        convert(src, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_pickle_without_generator_is_explained(tmp_path: Path):
    src = tmp_path / "snap.pkl"
    src.write_bytes(pickle.dumps({"G": None, "cur_nimg": 5}))
    with pytest.raises(ConversionError, match=r"snap.pkl: the snapshot has no 'G_ema'; it holds \{G: .*cur_nimg"):
        convert(src, tmp_path / "out")
    src.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ConversionError, match="snap.pkl"):
        convert(src, tmp_path / "out")


def test_config_json_layout_is_validated(golden_dir: Path, tmp_path: Path):
    src = golden_dir / "stylegan_xl_16" / "params.npz"
    good = json.loads((golden_dir / "stylegan_xl_16" / "config.json").read_text())
    broken = {k: v for k, v in good.items() if k not in ("effective", "common_kwargs")}
    tampered = json.loads(json.dumps(good))
    tampered["layers"][2]["out_channels"] += 1
    for config, message in [(broken, "cannot determine 'img_resolution'"),
                            (tampered, "'layers' list disagrees with the spec computed from G_kwargs_passed")]:
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConversionError, match=message) as info:
            convert(src, tmp_path / "out", tmp_path / "config.json")
        assert str(tmp_path / "config.json") in str(info.value)
