"""The torch features a new user of hal reaches in the first hour: checkpoints, state dicts, data loading with
pinned memory, generators and seeding, the generated `.hal()` methods, and the autoload switch."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from tests.conftest import run_python as run_py


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_load_with_every_kind_of_map_location(cpu_dev, emu_dev, emu_dev2):
    t = torch.arange(4.0, device=emu_dev)
    for where, expect in [(str(emu_dev2), emu_dev2), (emu_dev2, emu_dev2), ({str(emu_dev): str(cpu_dev)}, cpu_dev),
                          ("cpu", torch.device("cpu")), (None, emu_dev)]:
        loaded = torch.load(_saved({"t": t}), map_location=where)["t"]  # weights_only=True, torch's default
        assert loaded.device == expect and loaded.cpu().tolist() == [0, 1, 2, 3], where
    cpu_saved = torch.load(_saved(torch.ones(2)), map_location=str(emu_dev))
    assert cpu_saved.device == emu_dev
    model = torch.load(_saved(nn.Linear(2, 3).to(emu_dev)), weights_only=False)
    assert model.weight.device == emu_dev and model(torch.ones(1, 2, device=emu_dev)).shape == (1, 3)


def test_a_hal_checkpoint_loads_on_the_cpu_without_hal(emu_dev, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.arange(3.0, device=emu_dev)}, path)
    proc = run_py(f"""
        import sys, torch
        print(torch.load({str(path)!r}, map_location="cpu")["w"].tolist(), "hal._torch_C" in sys.modules)
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.0, 1.0, 2.0] False"


def test_state_dicts_cross_between_cpu_and_hal(emu_dev):
    src = nn.Linear(3, 2)
    model = nn.Linear(3, 2).to(emu_dev)
    weight = model.weight
    model.load_state_dict(src.state_dict())
    assert model.weight is weight and weight.device == emu_dev and torch.equal(weight.cpu(), src.weight.detach())
    back = nn.Linear(3, 2)
    back.load_state_dict(model.state_dict())
    assert torch.equal(back.weight, src.weight)
    # Optimizer state saved on the CPU follows the parameters onto hal.
    opt = torch.optim.Adam(src.parameters())
    src(torch.randn(4, 3)).sum().backward()
    opt.step()
    hal_opt = torch.optim.Adam(model.parameters())
    hal_opt.load_state_dict(opt.state_dict())
    assert all(s["exp_avg"].device == emu_dev for s in hal_opt.state.values())
    model(torch.randn(4, 3, device=emu_dev)).sum().backward()
    hal_opt.step()


@pytest.mark.parametrize("pin_device", ["", "hal"])
def test_dataloader_pins_batches_for_non_blocking_copies(emu_dev, pin_device):
    data = torch.arange(24.0).view(12, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=4, pin_memory=True,
                                         pin_memory_device=pin_device)
    with pytest.warns(UserWarning) if pin_device else contextlib.nullcontext():  # torch deprecates pin_memory_device
        batches = [b for (b,) in loader]
    assert all(b.is_pinned() for b in batches)
    on_device = [b.to(emu_dev, non_blocking=True) for b in batches]
    torch.hal.synchronize(emu_dev)
    assert torch.equal(torch.cat([b.cpu() for b in on_device]), data)


def test_generators_and_seeding_reach_every_hal_device(cpu_dev, emu_dev, emu_dev2):
    cpu_numbers = torch.randn(5, generator=torch.Generator().manual_seed(11))
    for g in (torch.Generator("hal"), torch.Generator(str(emu_dev)), torch.Generator(device=emu_dev2)):
        g.manual_seed(11)
        dev = torch.device("hal", torch.hal.current_device()) if g.device.index is None else g.device
        assert torch.equal(torch.randn(5, device=dev, generator=g).cpu(), cpu_numbers)
    torch.manual_seed(11)
    for dev in (cpu_dev, emu_dev, emu_dev2):
        assert torch.hal.default_generators[dev.index].initial_seed() == 11
        assert torch.equal(torch.randn(5, device=dev).cpu(), cpu_numbers)
    before = torch.hal.get_rng_state(emu_dev)
    with torch.random.fork_rng(devices=[emu_dev.index], device_type="hal"):
        torch.rand(10, device=emu_dev)
    assert torch.equal(torch.hal.get_rng_state(emu_dev), before)


def test_generated_hal_methods(emu_dev):
    t = torch.ones(2).hal(emu_dev.index)
    assert t.is_hal and t.device == emu_dev and not torch.ones(1).is_hal
    assert torch.ones(2).untyped_storage().hal(emu_dev.index).device == emu_dev
    m = nn.Linear(2, 2)
    w = m.weight
    assert m.hal(emu_dev).weight is w and w.device == emu_dev
    with pytest.raises(TypeError, match="numpy.*cpu"):
        t.numpy()


def test_autoload_off_then_explicit_import():
    proc = run_py("""
        import torch
        before = torch._C._get_privateuse1_backend_name()
        import hal.torch
        print(before, torch.ones(2, device="hal:1").sum().item())
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "privateuseone 2.0"
