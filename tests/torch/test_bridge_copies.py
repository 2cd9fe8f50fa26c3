"""Queued (non_blocking) copies whose buffers the caller drops before the stream ran them."""
from __future__ import annotations

import torch
from tests.conftest import run_python as run_py

SLOW_LINK = {"HAL_PLUGIN_CONFIG_EMU": "slowlink:2:speed=1.0:mem=1GiB:link=0.5"}


def test_dropped_non_blocking_device_to_host_destinations():
    # Each destination is freed at once while its copy still waits behind the others on the slow link: the copy
    # must not land in freed memory (it used to: fresh host tensors were overwritten, or the process crashed).
    proc = run_py("""
        import torch, hal.torch
        src = torch.full((1 << 20,), 7.0, device="hal:1")
        for _ in range(8):
            src.to("cpu", non_blocking=True)
        fresh = [torch.zeros(1 << 20) for _ in range(8)]
        torch.hal.synchronize(1)
        print("clean", all(bool(f.eq(0).all()) for f in fresh))
        kept = src.to("cpu", non_blocking=True)
        torch.hal.synchronize(1)
        print("kept", bool(kept.eq(7).all()))
    """, env=SLOW_LINK)
    assert proc.returncode == 0, proc.stderr
    assert "clean True" in proc.stdout and "kept True" in proc.stdout


def test_non_blocking_copies_from_temporaries_and_between_devices():
    proc = run_py("""
        import torch, hal.torch
        d = torch.empty(1 << 20, device="hal:1")
        d.copy_(torch.full((1 << 20,), 3, dtype=torch.int64), non_blocking=True)  # staged temporary (dtype)
        d.copy_(torch.full((1,), 5.0).expand(1 << 20) + 0, non_blocking=True)       # temporary source
        src = torch.full((1 << 20,), 9.0, device="hal:1")
        peer = src.to("hal:2", non_blocking=True)
        del src
        reuse = torch.full((1 << 20,), -1.0, device="hal:1")   # may take the freed block of src
        torch.hal.synchronize(1); torch.hal.synchronize(2)
        print("h2d", bool(d.cpu().eq(5).all()), "peer", bool(peer.cpu().eq(9).all()))
    """, env=SLOW_LINK)
    assert proc.returncode == 0, proc.stderr
    assert "h2d True peer True" in proc.stdout
