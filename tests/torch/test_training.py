"""Autograd and training, RNG, torch.save/load, memory statistics, streams and events."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4))


def test_mlp_gradients_match_cpu(dev):
    ref = _mlp()
    model = _mlp().to(dev)
    x = torch.randn(8, 16)
    y = torch.randint(0, 4, (8,))
    nn.functional.cross_entropy(ref(x), y).backward()
    nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
    for (name, p_ref), p in zip(ref.named_parameters(), model.parameters()):
        assert p.grad.device == dev
        torch.testing.assert_close(p.grad.cpu(), p_ref.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_training_losses_match_cpu(dev):
    def train(device):
        model = _mlp().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(5):
            x = torch.randn(16, 16, generator=g).to(device)
            y = torch.randint(0, 4, (16,), generator=g).to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    assert train(dev) == pytest.approx(train("cpu"), rel=1e-5)


def test_rng_reproducible_per_device(cpu_dev, emu_dev):
    torch.hal.manual_seed_all(123)
    a = torch.randn(5, device=emu_dev).cpu()
    torch.hal.manual_seed_all(123)
    b = torch.randn(5, device=emu_dev).cpu()
    assert torch.equal(a, b)
    # Each device has its own generator, with the same algorithm as a CPU generator.
    torch.manual_seed(7)  # seeds CPU and every hal device
    c = torch.randn(5, device=cpu_dev).cpu()
    assert torch.equal(c, torch.randn(5, generator=torch.Generator().manual_seed(7)))
    state = torch.hal.get_rng_state(emu_dev)
    d1 = torch.rand(3, device=emu_dev).cpu()
    torch.hal.set_rng_state(state, emu_dev)
    assert torch.equal(torch.rand(3, device=emu_dev).cpu(), d1)
    g = torch.Generator(device=emu_dev).manual_seed(5)
    e1 = torch.randn(4, device=emu_dev, generator=g).cpu()
    assert torch.equal(torch.randn(4, device=emu_dev, generator=torch.Generator(device=emu_dev).manual_seed(5)).cpu(),
                       e1)
    # Dropout draws from the device too and is reproducible.
    torch.manual_seed(3)
    m1 = nn.functional.dropout(torch.ones(100, device=emu_dev), 0.5).cpu()
    torch.manual_seed(3)
    m2 = nn.functional.dropout(torch.ones(100, device=emu_dev), 0.5).cpu()
    assert torch.equal(m1, m2)


def test_save_and_load_with_map_location(cpu_dev, emu_dev):
    model = _mlp().to(emu_dev)
    buf = io.BytesIO()
    torch.save({"state": model.state_dict(), "t": torch.arange(3, device=emu_dev)}, buf)
    buf.seek(0)
    loaded = torch.load(buf, map_location=str(cpu_dev))
    assert loaded["t"].device == cpu_dev and loaded["t"].cpu().tolist() == [0, 1, 2]
    for k, v in model.state_dict().items():
        assert loaded["state"][k].device == cpu_dev
        assert torch.equal(loaded["state"][k].cpu(), v.cpu())
    buf.seek(0)
    again = torch.load(buf)  # back onto the device it was saved from
    assert again["t"].device == emu_dev


def test_memory_stats_rise_and_fall(emu_dev):
    torch.hal.synchronize(emu_dev)
    base = torch.hal.memory_allocated(emu_dev)
    torch.hal.reset_peak_memory_stats(emu_dev)
    x = torch.empty(4 << 20, dtype=torch.uint8, device=emu_dev)
    assert torch.hal.memory_allocated(emu_dev) >= base + (4 << 20)
    assert torch.accelerator.memory_allocated(emu_dev.index) == torch.hal.memory_allocated(emu_dev)
    assert torch.hal.memory_reserved(emu_dev) >= torch.hal.memory_allocated(emu_dev)
    del x
    assert torch.hal.memory_allocated(emu_dev) == base
    assert torch.hal.max_memory_allocated(emu_dev) >= base + (4 << 20)
    torch.hal.reset_peak_memory_stats(emu_dev)
    assert torch.hal.max_memory_allocated(emu_dev) == base
    assert torch.hal.memory_stats(emu_dev)["allocated_bytes.all.current"] == base
    torch.hal.empty_cache()
    free, total = torch.hal.mem_get_info(emu_dev)
    assert 0 < free <= total


def test_memory_stats_in_torch_cuda_layout(emu_dev):
    i = emu_dev.index
    torch.hal.synchronize(emu_dev)
    torch.hal.reset_accumulated_memory_stats(emu_dev)
    torch.hal.reset_peak_memory_stats(emu_dev)
    before = torch.hal.memory_stats(emu_dev)
    assert before["allocation.all.allocated"] == before["allocation.all.freed"] == 0
    assert before["num_ooms"] == before["num_alloc_retries"] == 0
    xs = [torch.empty(n, dtype=torch.uint8, device=emu_dev) for n in (1000, 2 << 20)]
    s = torch.hal.memory_stats(emu_dev)
    assert s["allocated_bytes.all.current"] == before["allocated_bytes.all.current"] + 1024 + (2 << 20)
    assert s["allocated_bytes.all.peak"] >= s["allocated_bytes.all.current"]
    assert s["reserved_bytes.all.current"] >= s["allocated_bytes.all.current"]
    assert s["reserved_bytes.all.peak"] >= s["reserved_bytes.all.current"]
    assert s["allocation.all.allocated"] == 2 and s["allocation.all.freed"] == 0
    assert s["active.all.current"] == s["allocation.all.current"]
    assert s["num_device_alloc"] >= s["segment.all.allocated"]
    assert torch.accelerator.memory_stats(i) == s
    assert torch.accelerator.max_memory_allocated(i) == s["allocated_bytes.all.peak"]
    assert torch.accelerator.memory_reserved(i) == s["reserved_bytes.all.current"]
    del xs
    after = torch.hal.memory_stats(emu_dev)
    assert after["allocation.all.freed"] == 2 and after["allocation.all.current"] == before["allocation.all.current"]
    assert s["allocation.all.current"] == before["allocation.all.current"] + 2
    assert after["allocated_bytes.all.peak"] == s["allocated_bytes.all.peak"]
    torch.hal.reset_accumulated_memory_stats(emu_dev)
    reset = torch.hal.memory_stats(emu_dev)
    assert reset["allocation.all.allocated"] == reset["allocation.all.freed"] == 0
    assert reset["allocated_bytes.all.peak"] == s["allocated_bytes.all.peak"]     # peaks are not accumulated
    assert reset["allocated_bytes.all.current"] == after["allocated_bytes.all.current"]
    assert reset["allocation.all.current"] == after["allocation.all.current"]             # live counts stay
    assert reset["segment.all.current"] == after["segment.all.current"] > 0
    torch.hal.reset_peak_memory_stats(emu_dev)
    assert torch.hal.max_memory_allocated(emu_dev) == reset["allocated_bytes.all.current"]


def test_streams_and_events_order_work(emu_dev):
    s = torch.hal.Stream(emu_dev)
    assert s.device == emu_dev and s != torch.hal.default_stream(emu_dev)
    x = torch.randn(1 << 20)
    with torch.hal.stream(s):
        assert torch.hal.current_stream(emu_dev) == s
        d = x.to(emu_dev, non_blocking=True)   # queued on s
        e = torch.Event(device=emu_dev, enable_timing=True)
        e.record(s)
    assert torch.hal.current_stream(emu_dev) == torch.hal.default_stream(emu_dev)
    torch.hal.current_stream(emu_dev).wait_event(e)  # the default stream now runs after the copy
    assert torch.equal(d.cpu(), x)
    e2 = torch.Event(device=emu_dev, enable_timing=True)
    e2.record(s)
    e2.synchronize()
    assert e.query() and e2.query()
    assert e.elapsed_time(e2) >= 0
    torch.accelerator.synchronize(emu_dev.index)


def test_missing_synchronize_shows_on_emu():
    # emu streams run on a worker thread, here with a slow emulated host link: a non-blocking device->host
    # copy queued behind another has not landed when it returns, so a missing synchronize shows as wrong data.
    from tests.conftest import run_python as run_py

    proc = run_py("""
        import torch, hal.torch
        dev = next(i for i in range(torch.hal.device_count()) if torch.hal.get_device_name(i).startswith("emu"))
        x = torch.randn(4 << 20)
        d = x.to(f"hal:{dev}")
        first, out = torch.zeros_like(x), torch.zeros_like(x)
        first.copy_(d, non_blocking=True)  # paced: the worker sleeps after it
        out.copy_(d, non_blocking=True)    # queued behind it
        early = torch.equal(out, x)
        torch.hal.current_stream(dev).synchronize()
        print("early", early, "after", torch.equal(out, x))
    """, env={"HAL_PLUGIN_CONFIG_EMU": "slowlink:1:speed=1.0:mem=1GiB:link=0.5"})
    assert proc.returncode == 0, proc.stderr
    assert "early False after True" in proc.stdout
