"""torch's host allocator for hal (torch.accelerator's host-memory calls), in a subprocess: it used to crash."""
from __future__ import annotations

from tests.conftest import run_python as run_py


def test_empty_host_cache_and_pinned_memory_after_device_use():
    proc = run_py("""
        import torch, hal.torch
        x = torch.randn(64, device="hal:1")
        pinned = torch.empty(64, pin_memory=True)
        pinned.copy_(x.cpu())
        torch.accelerator.empty_host_cache()              # Crashed: no at::HostAllocator for PrivateUse1.
        y = pinned.to("hal:1", non_blocking=True); torch.hal.synchronize()
        print(pinned.is_pinned(), torch.equal(y.cpu(), x.cpu()))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
