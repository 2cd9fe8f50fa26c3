"""torch.hal, torch.accelerator, registration, autoload and fork safety."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import run_python as run_py


def test_registered_as_hal(cpu_dev):
    assert torch._C._get_privateuse1_backend_name() == "hal"
    assert torch.hal.is_available()
    assert torch.hal.device_count() >= 2
    assert torch.accelerator.current_accelerator() == torch.device("hal")
    assert torch.accelerator.device_count() == torch.hal.device_count()
    t = torch.empty(2, device=cpu_dev)
    assert t.is_hal and t.device == cpu_dev
    assert torch.ones(2).hal(cpu_dev.index).device == cpu_dev


def test_current_device_round_trips(cpu_dev, emu_dev):
    prev = torch.accelerator.current_device_index()
    try:
        torch.accelerator.set_device_index(emu_dev.index)
        assert torch.hal.current_device() == emu_dev.index
        assert torch.empty(1, device="hal").device == emu_dev
        torch.hal.set_device(cpu_dev)
        assert torch.accelerator.current_device_index() == cpu_dev.index
        with torch.hal.device(emu_dev):
            assert torch.hal.current_device() == emu_dev.index
        assert torch.hal.current_device() == cpu_dev.index
    finally:
        torch.hal.set_device(prev)


def test_bad_device_index_raises_but_count_does_not():
    with pytest.raises(RuntimeError, match="invalid device index"):
        torch.empty(1, device=f"hal:{torch.hal.device_count() + 3}")
    assert torch.hal.device_count() > 0


def test_torch_device_mapping(cpu_dev):
    import hal
    from hal.torch import torch_device_of

    d = hal.device(cpu_dev.index)
    assert torch_device_of(d) == cpu_dev
    assert d.torch_device == cpu_dev and hal.device("emu:0").torch_device == torch.device("hal", 1)

    class FakeCuda:  # A device of a plugin named "cuda" maps to torch's own cuda device.
        plugin, local_index, index = "cuda", 1, 7

    assert torch_device_of(FakeCuda()) == torch.device("cuda", 1)


def test_module_to_and_device_names(emu_dev):
    m = torch.nn.Linear(3, 2).to(emu_dev)
    assert m.weight.device == emu_dev
    assert torch.hal.get_device_name(emu_dev).startswith("emu:")
    assert torch.hal.get_device_properties(emu_dev).emulated


def test_fork_after_init_raises_in_child(emu_dev):
    proc = run_py(f"""
        import os, torch, hal.torch
        x = torch.ones(4, device="hal:{emu_dev.index}")
        pid = os.fork()
        if pid == 0:
            try:
                torch.ones(4, device="hal:{emu_dev.index}")
                os._exit(3)
            except RuntimeError as e:
                os._exit(0 if "forked" in str(e) else 4)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent", x.sum().item())
    """)
    assert proc.returncode == 0, proc.stderr
    assert "child 0" in proc.stdout and "parent 4.0" in proc.stdout


def _entry_point_installed() -> bool:
    return any(ep.value == "hal._autoload:autoload" for ep in importlib.metadata.entry_points(group="torch.backends"))


@pytest.fixture
def autoload_env(tmp_path) -> dict[str, str]:
    """Environment in which `import torch` finds HAL's torch.backends entry point: the installed one, or (before
    setup.py declares it) a minimal dist-info on PYTHONPATH declaring exactly the same entry point."""
    if _entry_point_installed():
        return {}
    info = tmp_path / "hal_torch_entry_point-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hal-torch-entry-point\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[torch.backends]\nhal = hal._autoload:autoload\n")
    repo = Path(__file__).resolve().parents[2]
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo), os.environ.get("PYTHONPATH", "")])}


def test_autoload_with_plain_import_torch(autoload_env):
    proc = run_py("""
        import torch
        x = torch.randn(4, device='hal:1')
        print((x @ x.T).cpu())
    """, env=autoload_env)
    assert proc.returncode == 0, proc.stderr
    assert "tensor(" in proc.stdout


def test_autoload_off(autoload_env):
    proc = run_py("""
        import sys, torch
        print(torch._C._get_privateuse1_backend_name(), "hal._torch_C" in sys.modules)
    """, env={**autoload_env, "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "privateuseone False"


def test_failing_autoload_only_warns():
    # Another backend already owns PrivateUse1: registration fails, the autoload hook must only warn.
    proc = run_py("""
        import warnings, torch
        torch.utils.rename_privateuse1_backend("other")
        from hal._autoload import autoload
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            autoload()
        print("warned", any("not registered" in str(x.message) for x in w))
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "warned True" in proc.stdout


def test_import_hal_stays_light():
    proc = run_py("""
        import sys, hal
        print("torch" in sys.modules, "hal._torch_C" in sys.modules)
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False False"
