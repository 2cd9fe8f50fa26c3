"""In-process checks of the backend's parts: registration through the autoload, fixed-order sums, the Work
handle, the host key. (Multi-process behaviour is in the other files here.)"""
from __future__ import annotations

import threading
import tomllib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_python

pytestmark = pytest.mark.needs_native
REPO = Path(__file__).resolve().parents[2]


def test_the_entry_point_is_the_autoload_module_and_it_registers_the_backend():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["torch.backends"]["hal"] == "hal._autoload:autoload"
    # Group of one over a FileStore: init_process_group("hal") works after the autoload alone.
    proc = run_python("""
        import tempfile, torch, torch.distributed as dist
        from hal._autoload import autoload
        autoload()
        dist.init_process_group("hal", store=dist.FileStore(tempfile.mktemp(), 1), rank=0, world_size=1)
        t = torch.ones(3, device="hal:1")
        dist.all_reduce(t)
        w = dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True)
        w.wait()
        print(dist.get_backend(), t.cpu().tolist())
        dist.destroy_process_group()
    """, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["hal", "[1.0,", "1.0,", "1.0]"]


def test_import_torch_alone_registers_the_backend_through_the_entry_point(tmp_path):
    """The entry point as pip would install it (a dist-info of its own here, since the editable install's
    metadata changes only on reinstall): `import torch` runs it, the backend is there."""
    info = tmp_path / "haltest-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: haltest\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[torch.backends]\nhal_test = hal._autoload:autoload\n")
    import os

    proc = run_python("""
        import torch, torch.distributed as dist
        print("HAL" in dist.Backend._plugins)
    """, env={"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "PYTHONWARNINGS": "error::RuntimeWarning"},
        timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "True"


def test_the_autoload_warns_instead_of_raising():
    proc = run_python("""
        import warnings, hal.collectives
        def boom(): raise RuntimeError("no backend today")
        hal.collectives.register = boom
        from hal._autoload import autoload
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            autoload()
        print([str(w.message) for w in caught])
    """, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no backend today" in proc.stdout and "not registered" in proc.stdout


def test_float32_sums_are_compensated():
    torch = pytest.importorskip("torch")
    from hal.collectives.deterministic import ordered_sum

    parts = torch.tensor([[1.0], [1e-8], [1e-8], [-1.0]] * 1, dtype=torch.float32).repeat(1, 4)
    naive = ((parts[0] + parts[1]) + parts[2]) + parts[3]
    assert naive[0].item() == 0.0  # Plain float32 loses both small terms...
    assert ordered_sum(parts, torch.float32)[0].item() == pytest.approx(2e-8, rel=1e-3)  # ...Kahan keeps them.


def test_half_precision_sums_accumulate_in_float32():
    torch = pytest.importorskip("torch")
    from hal.collectives.deterministic import ordered_sum

    parts = torch.tensor([[256.0], [1.0], [1.0]], dtype=torch.bfloat16)
    # In bfloat16 256 + 1 rounds back to 256 twice; accumulated in float32, the sum is 258 (a bfloat16 value).
    assert ordered_sum(parts, torch.bfloat16).item() == 258.0
    assert ordered_sum(parts, torch.bfloat16, average_over=3).item() == pytest.approx(86.0, rel=1e-2)
    assert np.isfinite(ordered_sum(parts.half(), torch.float16).float().numpy()).all()


def test_a_work_completes_fails_and_times_out_clearly():
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    from hal.collectives.work import Work

    w = Work("allreduce", 7)
    with pytest.raises(dist.DistBackendError, match=r"allreduce \(op #7\) did not finish within the 0.1 s"):
        w.wait(timedelta(milliseconds=100))
    assert not w.is_completed()
    out = [torch.ones(2)]
    threading.Timer(0.05, w._complete, (out,)).start()
    assert w.wait() and w.is_completed() and w.is_success()
    assert w.get_future().wait() is out
    bad = Work("broadcast", 8)
    bad._fail(dist.DistBackendError("peer 3 is gone"))
    with pytest.raises(dist.DistBackendError, match="peer 3 is gone"):
        bad.wait()
    assert "peer 3" in str(bad.exception())
    with pytest.raises(dist.DistBackendError):
        bad.get_future().wait()


def test_the_host_key_names_the_network_namespace(monkeypatch):
    from hal.collectives import topology

    monkeypatch.delenv("HAL_HOST_ID", raising=False)
    import os

    key = topology.host_key()
    net = os.stat("/proc/self/ns/net")
    assert f"{net.st_dev}:{net.st_ino}" in key
    monkeypatch.setenv("HAL_HOST_ID", "pretend-host-2")
    assert topology.host_key() == "pretend-host-2"
