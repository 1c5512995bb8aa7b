"""Tests for radgan_jax.tools.torch_state_dict: torch-free reading of state_dicts (torch only writes them)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from radgan_jax.tools.torch_state_dict import StateDictError, UnsafePickleError, load_state_dict  # noqa: E402


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    return {
        "f32": torch.randn(3, 4, generator=gen),
        "f64": torch.randn(2, generator=gen).double(),
        "f16": torch.randn(5, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64": torch.arange(-3, 7),
        "i32": torch.arange(4, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        # views into one shared storage: the whole, a transpose (non-contiguous), a strided window, a row
        "shared": base, "transposed": base.t(), "window": base[1:3, 2:6:2], "row": base[2],
        "conv": torch.randn(8, 4, 3, 3, generator=gen).permute(0, 2, 3, 1),  # channels-last strides
    }


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _assert_equal(got: dict[str, np.ndarray], ref: dict[str, torch.Tensor], ordered: bool = True) -> None:
    assert list(got) == list(ref) if ordered else sorted(got) == sorted(ref)
    for k, t in ref.items():
        a = got[k]
        if t.dtype == torch.bfloat16:
            assert a.dtype.name == "bfloat16", k
            a = a.astype(np.float32)
        else:
            assert a.dtype == t.numpy().dtype, k
        assert a.shape == tuple(t.shape) and a.flags.c_contiguous, k
        np.testing.assert_array_equal(a, _as_numpy(t), err_msg=k)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_roundtrip(tmp_path: Path, legacy: bool) -> None:
    ref = _tensors()
    path = tmp_path / "w.pth"
    torch.save(ref, path, _use_new_zipfile_serialization=not legacy)
    assert zipfile.is_zipfile(path) is not legacy
    _assert_equal(load_state_dict(path), ref)


def test_module_state_dict_and_nested_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 5))
    ref = model.state_dict()
    torch.save({"epoch": 3, "state_dict": ref}, tmp_path / "ckpt.pt")  # training-checkpoint wrapper
    _assert_equal(load_state_dict(tmp_path / "ckpt.pt"), dict(ref))
    torch.save(model, tmp_path / "model.pt")  # a whole pickled module: read as inert records
    _assert_equal(load_state_dict(tmp_path / "model.pt"), dict(ref))


def test_safetensors_and_npz(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ref = {k: t.contiguous().clone() for k, t in _tensors().items()}  # safetensors refuses shared storages
    save_file(ref, tmp_path / "w.safetensors", metadata={"format": "pt"})
    _assert_equal(load_state_dict(tmp_path / "w.safetensors"), ref, ordered=False)  # writer orders by dtype
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in ref.items() if v.dtype != torch.bfloat16})
    got = load_state_dict(tmp_path / "w.npz")
    assert sorted(got) == sorted(k for k in ref if k != "bf16")
    np.testing.assert_array_equal(got["transposed"], ref["transposed"].numpy())


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint does: call os.system while loading
        return os.system, ("echo pwned > /dev/null",)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_refused(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": _Payload()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafePickleError, match=r"evil\.pth.*forbidden global '(posix|nt|os)\.system'"):
        load_state_dict(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_torch_file(tmp_path: Path, legacy: bool) -> None:
    good = tmp_path / "good.pth"
    torch.save(_tensors(), good, _use_new_zipfile_serialization=not legacy)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(StateDictError, match=rf"cut{cut}\.pth"):
            load_state_dict(bad)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "text.pth").write_text("hello world, not a checkpoint")
    with pytest.raises(StateDictError, match=r"text\.pth: unknown format"):
        load_state_dict(tmp_path / "text.pth")
    with pytest.raises(StateDictError, match=r"missing\.pth: cannot read"):
        load_state_dict(tmp_path / "missing.pth")
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(StateDictError, match=r"other\.pth: a zip archive but not a torch.save file"):
        load_state_dict(tmp_path / "other.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    with pytest.raises(StateDictError, match=r"list\.pth: holds a list"):
        load_state_dict(tmp_path / "list.pth")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(StateDictError, match=r"bad\.safetensors: tensor 'w'.*data_offsets"):
        load_state_dict(tmp_path / "bad.safetensors")
