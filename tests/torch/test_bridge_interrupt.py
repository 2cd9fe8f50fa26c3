"""Ctrl-C interrupts torch.hal.synchronize on the main thread (the work stays queued), in a subprocess."""
from __future__ import annotations

from tests.conftest import run_python as run_py


def test_ctrl_c_interrupts_torch_hal_synchronize():
    proc = run_py("""
        import os, signal, threading, torch, hal.torch
        src = torch.ones(128 * 2**20, dtype=torch.uint8)
        dst = src.to("hal:1", non_blocking=True)          # About 13 s over a 10 MB/s emulated link.
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            torch.hal.synchronize(1)
            print("completed")
        except KeyboardInterrupt:                          # Raised while waiting, not once the copy was done:
            print("interrupted", torch.hal.current_stream(1).query())   # the copy is still queued.
    """, env={"HAL_EMU_DEVICES": "slow:1:link=0.01", "HAL_VISIBLE_DEVICES": "cpu:0,emu:0"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted", "False"]
