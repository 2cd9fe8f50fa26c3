"""Fixtures of the torch bridge tests: a cpu-plugin device and emu devices as torch devices.

The bridge registers torch's one out-of-tree backend for the whole process, so registration on/off, autoload
and fork tests run in fresh interpreters (tests/conftest.py: run_python).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _bridge():
    try:
        import hal.torch  # noqa: F401
        from hal import _torch_C  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the torch bridge hal._torch_C is not built ({e})", allow_module_level=True)
    return torch.hal


def _find(prefix: str, nth: int = 0) -> torch.device:
    mod = _bridge()
    names = [mod.get_device_name(i) for i in range(mod.device_count())]
    hits = [i for i, n in enumerate(names) if n.startswith(prefix + ":")]
    if len(hits) <= nth:
        pytest.skip(f"needs {nth + 1} '{prefix}' device(s); HAL devices here: {names}")
    return torch.device("hal", hits[nth])


@pytest.fixture(scope="session")
def cpu_dev() -> torch.device:
    """The cpu plugin's device (host memory)."""
    return _find("cpu")


@pytest.fixture(scope="session")
def emu_dev() -> torch.device:
    """An emu device at relative speed 1 (memory unreadable by the host, asynchronous streams)."""
    mod = _bridge()
    for i in range(mod.device_count()):
        if mod.get_device_name(i).startswith("emu:") and mod.get_device_properties(i).relative_speed >= 1.0:
            return torch.device("hal", i)
    pytest.skip("needs an emu device at relative speed 1")


@pytest.fixture(scope="session")
def emu_dev2(emu_dev) -> torch.device:
    """A second emu device."""
    mod = _bridge()
    for i in range(mod.device_count()):
        if i != emu_dev.index and mod.get_device_name(i).startswith("emu:"):
            return torch.device("hal", i)
    pytest.skip("needs two emu devices")


@pytest.fixture(params=["cpu", "emu"])
def dev(request, cpu_dev, emu_dev) -> torch.device:
    """Each kind of device in turn."""
    return cpu_dev if request.param == "cpu" else emu_dev
