"""torch.hal functions a user of torch.cuda reaches for first, and the honest answers where HAL has none."""
from __future__ import annotations

import pytest
import torch

import hal


def test_device_module_is_torch_hal():
    assert torch.get_device_module("hal") is torch.hal
    assert torch.get_device_module(torch.device("hal", 1)) is torch.hal
    assert set(torch.hal.__all__) <= set(dir(torch.hal))
    torch.hal.init()
    assert torch.hal.is_initialized()


def test_capability_properties_and_bf16(cpu_dev, emu_dev):
    assert torch.hal.get_device_capability(emu_dev) == (0, 0)
    props = torch.hal.get_device_properties(emu_dev)
    assert isinstance(props, hal.DeviceProperties) and props.emulated
    assert (props.major, props.minor) == (0, 0) and props.total_memory > 0 and props.name
    assert torch.hal.get_device_properties(cpu_dev).is_integrated and not props.is_integrated
    assert torch.hal.is_bf16_supported() and torch.hal.is_bf16_supported(device=cpu_dev)
    assert torch.hal.is_bf16_supported(including_emulation=False, device=emu_dev) == ("bf16" in props.peak_flops)
    x = torch.ones(3, dtype=torch.bfloat16, device=emu_dev)
    assert (x + x).cpu().tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="device index .* out of range"):
        torch.hal.get_device_capability(torch.hal.device_count() + 2)


def test_device_of_makes_the_tensors_device_current(cpu_dev, emu_dev):
    prev = torch.hal.current_device()
    try:
        torch.hal.set_device(cpu_dev)
        with torch.hal.device_of(torch.empty(1, device=emu_dev)):
            assert torch.hal.current_device() == emu_dev.index
        with torch.hal.device_of(torch.empty(1)):
            assert torch.hal.current_device() == cpu_dev.index
        assert torch.hal.current_device() == cpu_dev.index
    finally:
        torch.hal.set_device(prev)


def test_memory_summary_shows_what_hal_tracks(emu_dev):
    torch.hal.synchronize(emu_dev)
    x = torch.empty(3 << 20, dtype=torch.uint8, device=emu_dev)
    text = torch.hal.memory_summary(emu_dev)
    stats = torch.hal.memory_stats(emu_dev)
    assert f"hal:{emu_dev.index} (emu:" in text and "emulated" in text
    allocated = next(line for line in text.splitlines() if line.startswith("| Allocated memory"))
    assert f"{stats['allocated_bytes.all.current'] / 2**20:.1f} MiB" in allocated and "n/a" in allocated
    allocations = next(line for line in text.splitlines() if line.startswith("| Allocations"))
    assert allocations.split("|")[2].strip() == str(stats["allocation.all.current"])
    assert allocations.split("|")[3].strip() == "n/a"  # HAL keeps no peak of the counts
    del x


def test_unavailable_functions_raise_naming_what_is_missing(emu_dev):
    with pytest.raises(NotImplementedError, match="memory_snapshot.*per-segment.*memory_stats"):
        torch.hal.memory_snapshot()
    for name in ("utilization", "temperature", "power_draw", "clock_rate", "list_gpu_processes"):
        with pytest.raises(NotImplementedError, match=f"torch.hal.{name}.*telemetry"):
            getattr(torch.hal, name)(emu_dev)


def test_torch_accelerator_reaches_hal(emu_dev):
    assert torch.accelerator.current_accelerator().type == "hal" and torch.accelerator.is_available()
    with torch.accelerator.device_index(emu_dev.index):
        assert torch.accelerator.current_device_index() == emu_dev.index
        assert torch.empty(1, device="hal").device == emu_dev
    x = torch.ones(10, device=emu_dev)
    assert torch.accelerator.memory_allocated(emu_dev.index) == torch.hal.memory_allocated(emu_dev) > 0
    assert torch.accelerator.get_memory_info(emu_dev.index) == torch.hal.mem_get_info(emu_dev)
    assert torch.accelerator.current_stream(emu_dev.index) == torch.hal.current_stream(emu_dev)
    torch.accelerator.synchronize(emu_dev.index)
    del x
