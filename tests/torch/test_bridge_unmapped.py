"""The bridge's paths for devices whose memory the host can neither address nor map (copies, cpu_fallback,
views through Meta kernels, in-place ops, out= resizes, generators): the torch tests again, on emu devices
configured with map=0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
UNMAPPED = {"HAL_EMU_DEVICES": "opaque:2:mem=1GiB:map=0"}
FILES = ["test_tensors.py", "test_interop.py", "test_bridge_math_bits.py", "test_bridge_views.py",
         "test_bridge_kernels.py", "test_bridge_fallback.py", "test_training.py"]


@pytest.mark.slow
def test_torch_tests_pass_on_unmapped_emu_devices():
    from tests.conftest import run_python as run_py

    probe = run_py("""
        import torch, hal.torch
        from hal import _torch_C
        info = [_torch_C._device_info(i) for i in range(torch.hal.device_count())]
        print(sorted(reachable for name, _, _, _, reachable in info if name.startswith("emu:")))
    """, env=UNMAPPED)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[False, False]", probe.stdout   # both emu devices are unreachable
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *[str(HERE / f) for f in FILES]],
                          env={**os.environ, **UNMAPPED}, cwd=HERE.parent.parent, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
