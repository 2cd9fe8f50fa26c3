"""What torch users see when devices are missing, and fork before any device use."""
from __future__ import annotations

from tests.conftest import run_python as run_py


def test_missing_devices_name_the_plugin_that_failed_to_load():
    proc = run_py("""
        import torch, hal.torch
        try:
            torch.ones(2, device="hal:1")
        except RuntimeError as e:
            print(str(e).splitlines()[0])
    """, env={"HAL_EMU_DEVICES": "broken::x", "HAL_OPENCL_LIBRARY": "/nonexistent"})  # no other device as hal:1
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "invalid device index 1" in line and "failed to load" in line and "emu" in line, line


def test_fork_before_any_device_use_leaves_the_child_usable():
    proc = run_py("""
        import os, torch, hal.torch
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if torch.ones(3, device="hal:1").sum().item() == 3 else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "child 0" in proc.stdout
