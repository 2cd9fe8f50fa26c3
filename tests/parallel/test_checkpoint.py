"""Checkpoints (hal.parallel.checkpoint): device-neutral, atomic, pruned, and corrupt ones skipped, never run."""
from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

from hal.parallel import checkpoint as ckpt
from hal.parallel.checkpoint import CheckpointError, CheckpointWarning


def make_state(step: int = 7, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(step)
    w = torch.randn(4, 3, generator=g).to(device)
    return {"layers": {0: {"params": {"weight": w, "bias": torch.arange(3, dtype=torch.int64)},
                           "optim": {"weight": {"exp_avg": torch.zeros(4, 3, dtype=torch.bfloat16),
                                                "step": torch.tensor(3.0)}}},
                       1: {"params": {"weight": torch.ones(2, 2, dtype=torch.float16, requires_grad=True)},
                           "optim": {}}},
            "optim_hparams": {"lr": 1e-3, "betas": [0.9, 0.999], "amsgrad": False, "name": "adamw"},
            "step": step, "data": {"epoch": 1, "position": 1234, "order": [3, 1, 2]},
            "rng": ckpt.rng_state(), "plan": {"model": "tiny", "pipelines": [{"stages": [1, 2]}]},
            "metrics": {"loss": 2.5, "best": None}}


def assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert b.device.type == "cpu" and b.dtype == a.dtype and not b.requires_grad, where
        assert torch.equal(a.detach().cpu(), b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, where


def test_round_trip_keeps_values_dtypes_and_keys(tmp_path):
    state = make_state()
    path = ckpt.save(tmp_path, 7, state)
    assert path == tmp_path / "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.pt"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["version"] == ckpt.FORMAT_VERSION and manifest["step"] == 7
    assert manifest["files"]["state.pt"]["size"] == (path / "state.pt").stat().st_size
    step, loaded = ckpt.load_latest(tmp_path)
    assert step == 7
    assert_same(state, loaded)
    assert list(loaded["layers"]) == [0, 1]  # int keys stay ints


@pytest.mark.needs_native
def test_tensors_of_hal_devices_come_back_on_the_cpu(tmp_path):
    t = torch.randn(3, device="hal:1")
    ckpt.save(tmp_path, 1, {"layers": {0: {"params": {"w": t}}}})
    _, loaded = ckpt.load_latest(tmp_path)
    w = loaded["layers"][0]["params"]["w"]
    assert w.device.type == "cpu" and torch.equal(w, t.cpu())


def test_views_are_saved_compact_and_contiguous(tmp_path):
    big = torch.arange(10_000, dtype=torch.float32).reshape(100, 100)
    ckpt.save(tmp_path, 0, {"col": big[:, 3], "t": big.t()})
    _, loaded = ckpt.load_latest(tmp_path)
    assert torch.equal(loaded["col"], big[:, 3]) and loaded["col"].is_contiguous()
    assert loaded["col"].untyped_storage().nbytes() == 100 * 4  # not the 40 kB of the whole matrix
    assert torch.equal(loaded["t"], big.t()) and loaded["t"].is_contiguous()


def test_keep_prunes_all_but_the_newest(tmp_path):
    for step in (10, 20, 30, 40, 50):
        ckpt.save(tmp_path, step, {"step": step}, keep=3)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40, 50]
    ckpt.save(tmp_path, 60, {"step": 60}, keep=1)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [60]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000060"]


def test_saving_an_earlier_step_keeps_it_and_leaves_later_ones(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save(tmp_path, step, {"step": step}, keep=2)
    ckpt.save(tmp_path, 25, {"step": 25}, keep=2)  # resumed from 20 after 30 and 40 were found corrupt
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [25, 30, 40]


def test_saving_a_step_again_replaces_it(tmp_path):
    ckpt.save(tmp_path, 5, {"v": 1})
    ckpt.save(tmp_path, 5, {"v": 2})
    assert ckpt.load_latest(tmp_path) == (5, {"v": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000005"]


def corrupt_truncate(path):
    data = (path / "state.pt").read_bytes()
    (path / "state.pt").write_bytes(data[: len(data) // 2])


def corrupt_flip(path):
    data = bytearray((path / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "state.pt").write_bytes(bytes(data))


def corrupt_no_manifest(path):
    (path / "manifest.json").unlink()


def corrupt_bad_json(path):
    (path / "manifest.json").write_text('{"format": "hal-checkpoint", "version": 1, ')


def corrupt_version(path):
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 999
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("corrupt, reason", [(corrupt_truncate, "truncated"), (corrupt_flip, "sha256"),
                                             (corrupt_no_manifest, "no manifest.json"),
                                             (corrupt_bad_json, "cannot be read"), (corrupt_version, "999")])
def test_a_corrupt_newest_falls_back_to_the_previous(tmp_path, corrupt, reason):
    ckpt.save(tmp_path, 1, make_state(1))
    newest = ckpt.save(tmp_path, 2, make_state(2))
    corrupt(newest)
    with pytest.warns(CheckpointWarning) as record:
        step, loaded = ckpt.load_latest(tmp_path)
    assert step == 1
    assert_same(make_state(1)["layers"], loaded["layers"])
    assert len(record) == 1
    message = str(record[0].message)
    assert str(newest) in message and reason in message


def test_all_corrupt_raises_listing_each(tmp_path):
    a = ckpt.save(tmp_path, 1, {"x": torch.ones(100)})
    b = ckpt.save(tmp_path, 2, {"x": torch.ones(100)})
    corrupt_flip(a)
    corrupt_no_manifest(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError) as info:
            ckpt.load_latest(tmp_path)
    assert isinstance(info.value, ValueError)
    assert str(a) in str(info.value) and "sha256" in str(info.value)
    assert str(b) in str(info.value) and "no manifest.json" in str(info.value)


def test_no_checkpoint_is_none(tmp_path):
    assert ckpt.load_latest(tmp_path / "missing") is None
    assert ckpt.load_latest(tmp_path) is None
    assert ckpt.list_checkpoints(tmp_path / "missing") == []


def test_a_crash_mid_write_is_ignored_and_cleaned_by_the_next_save(tmp_path):
    ckpt.save(tmp_path, 1, {"v": 1})
    crashed = tmp_path / ".tmp-step-00000002-deadbeef"
    crashed.mkdir()
    (crashed / "state.pt").write_bytes(b"PK\x03\x04 half a file")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a temp folder is not a checkpoint: no warning either
        assert ckpt.load_latest(tmp_path) == (1, {"v": 1})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    ckpt.save(tmp_path, 2, {"v": 2})
    assert not crashed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001", "step-00000002"]


def test_a_crash_while_replacing_a_step_puts_the_old_one_back(tmp_path):
    ckpt.save(tmp_path, 4, {"v": 4})
    ckpt.save(tmp_path, 5, {"v": 5})
    (tmp_path / "step-00000005").rename(tmp_path / ".old-step-00000005-0badcafe")  # moved aside, then killed
    ckpt.save(tmp_path, 6, {"v": 6})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000005", "step-00000006"]


def test_parameters_are_saved_as_plain_tensors(tmp_path):
    p = torch.nn.Parameter(torch.randn(2, 2))
    ckpt.save(tmp_path, 1, {"w": p})
    _, loaded = ckpt.load_latest(tmp_path)
    assert type(loaded["w"]) is torch.Tensor and not loaded["w"].requires_grad and torch.equal(loaded["w"], p)


EXECUTED = []


def _payload():
    EXECUTED.append("ran")
    return "pwned"


class Evil:
    def __reduce__(self):
        return (_payload, ())


def test_a_pickled_object_is_refused_not_executed(tmp_path):
    good = ckpt.save(tmp_path, 1, {"v": 1})
    evil = ckpt.save(tmp_path, 2, {"v": 2})
    torch.save({"v": Evil()}, evil / "state.pt")  # by hand, with a manifest that matches it
    m = json.loads((evil / "manifest.json").read_text())
    m["files"]["state.pt"] = {"size": (evil / "state.pt").stat().st_size, "sha256": ckpt._sha256(evil / "state.pt")}
    (evil / "manifest.json").write_text(json.dumps(m))
    with pytest.warns(CheckpointWarning, match="weights_only") as record:
        assert ckpt.load_latest(tmp_path) == (1, {"v": 1})
    assert str(evil) in str(record[0].message) and good != evil
    assert EXECUTED == []
    torch.load(evil / "state.pt", weights_only=False)  # the test's payload does run when unpickled plainly
    assert EXECUTED == ["ran"]


def test_state_that_cannot_be_loaded_safely_is_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"state\['data'\]\['rng'\].*random"):
        ckpt.save(tmp_path, 1, {"data": {"rng": random.Random(0)}})
    with pytest.raises(TypeError, match=r"state\['a'\]\[1\].*ndarray"):
        ckpt.save(tmp_path, 1, {"a": [1, np.zeros(3)]})
    with pytest.raises(ValueError, match="step"):
        ckpt.save(tmp_path, -1, {})
    with pytest.raises(ValueError, match="keep"):
        ckpt.save(tmp_path, 1, {}, keep=0)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.randn(), torch.randn(1)
    random.gauss(0, 1), np.random.standard_normal()  # leaves cached gaussians in both
    ckpt.save(tmp_path, 1, {"rng": ckpt.rng_state()})
    expected = (random.random(), random.gauss(0, 1), np.random.randn(4).tolist(), torch.randn(4).tolist())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    _, loaded = ckpt.load_latest(tmp_path)
    ckpt.set_rng_state(loaded["rng"])
    assert (random.random(), random.gauss(0, 1), np.random.randn(4).tolist(), torch.randn(4).tolist()) == expected


def test_a_malformed_rng_state_is_refused_and_changes_nothing():
    torch.manual_seed(5), random.seed(5)
    state = ckpt.rng_state()
    bad = dict(state, numpy=dict(state["numpy"], keys=torch.tensor([-1])))
    with pytest.raises(ValueError, match=r"state\['numpy'\]"):
        ckpt.set_rng_state(bad)
    with pytest.raises(ValueError, match="unknown parts"):
        ckpt.set_rng_state({"cuda": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"state\['torch'\]"):
        ckpt.set_rng_state({"torch": torch.zeros(3)})
    assert torch.equal(torch.get_rng_state(), state["torch"]) and random.getstate()[1] == tuple(
        state["python"]["state"].tolist())


def test_subclasses_of_python_numbers_are_stored_as_python_numbers(tmp_path):
    """np.float64 is a float: stored as is it would need numpy's unpickler and fail weights_only loading."""
    import numpy as np
    ckpt.save(tmp_path, 1, {"predicted": {"step_time": np.float64(0.25)}, "n": np.int64(3), "flag": np.bool_(True)})
    step, state = ckpt.load_latest(tmp_path)
    assert state == {"predicted": {"step_time": 0.25}, "n": 3, "flag": True}
    assert type(state["predicted"]["step_time"]) is float and type(state["n"]) is int
