"""--local with an injected probe, the latency/bandwidth fit, the profile cache, and measured model profiles."""
from __future__ import annotations

import types

import pytest

from hal.plan.cluster import GB, DeviceKind
from hal.plan.device_profile import DeviceProfile, cache_dir
from hal.plan.local import ProbedDevice, default_probe, local_cluster
from hal.plan.model import TransformerConfig, get_model
from hal.plan.planner import plan
from hal.plan.profile_devices import fit_latency_bandwidth


def test_fit_latency_bandwidth_recovers_parameters():
    sizes = [1e3, 1e5, 1e6, 1e7]
    times = [5e-6 + s / 20e9 for s in sizes]
    lat, bw = fit_latency_bandwidth(sizes, times)
    assert lat == pytest.approx(5e-6, rel=1e-6) and bw == pytest.approx(20e9, rel=1e-6)
    with pytest.raises(ValueError):
        fit_latency_bandwidth([1.0], [1.0])


def _fake_profile(**kw) -> DeviceProfile:
    return DeviceProfile(kind="cpu", device="cpu", matmul=[{"m": 1, "n": 1, "k": 1, "dtype": "float32",
                                                           "flops_per_s": 1e11}],
                         memory_bandwidth=2e10, memory_bytes=16 * GB, **kw)


def test_emulated_devices_derive_from_cpu(monkeypatch):
    import hal.plan.profile_devices as pd
    monkeypatch.setattr(pd, "cached_profile", lambda *a, **k: _fake_profile())
    props = types.SimpleNamespace(name="Emulated", emulated=True, relative_speed=0.5, total_memory=8 * 2 ** 30)
    devs = [types.SimpleNamespace(name=f"emu:{i}", properties=props) for i in range(2)]
    probed = default_probe(hal_devices=lambda: devs)
    assert [d.name for d in probed] == ["emu:0", "emu:1"]
    assert probed[0].peak_flops == 0.5e11 and probed[0].emulated and probed[0].profile_kind == "cpu"
    c = local_cluster(lambda: probed)
    (kind,) = c.kinds.values()
    assert kind.emulated and kind.label.endswith("(emulated)") and kind.relative_speed == 0.5
    # Without HAL devices the CPU alone.
    cpu_only = default_probe(hal_devices=lambda: [])
    assert [d.name for d in cpu_only] == ["cpu"] and not cpu_only[0].emulated


def test_local_cluster_plans():
    probed = [ProbedDevice("cpu", "cpu", 1e11, 16 * GB, 2e10)]
    r = plan(local_cluster(lambda: probed), get_model("tiny"), 8)
    assert r.estimate.fits


def test_profile_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    import hal.plan.profile_devices as pd
    prof = _fake_profile(copy_link={"latency": 1e-6, "bandwidth": 1e10})
    prof.save(cache_dir() / "cpu.json")
    assert (tmp_path / "profiles" / "cpu.json").exists()
    assert pd.cached_profile("cpu", "cpu").peak_flops == 1e11  # served from the cache, nothing measured
    kind = DeviceKind.from_profile(DeviceProfile.load(tmp_path / "profiles" / "cpu.json"))
    assert kind.source == "measured" and kind.chip_link.bandwidth == 1e10


def test_measured_profile_and_executor_on_cpu():
    torch = pytest.importorskip("torch")
    from hal.plan.cost import CostModel
    from hal.plan.execute import PlanExecutor, ValidationRow, validation_report
    from hal.plan.profile_layers import profile_torch_layers
    from hal.plan.plan import Pipeline, Plan, Stage
    from hal.plan.torch_model import build_layers, lm_loss, make_tokens

    cfg = TransformerConfig("t", 2, 32, 2, 64, 64, 8, gated_mlp=False, dtype_bytes=4)
    spec = profile_torch_layers(build_layers(cfg), lambda b: make_tokens(cfg, b), micro_batches=(1, 2),
                                seq_len=cfg.seq, repeats=2, warmup=1, loss_fn=lm_loss,
                                optimizer=lambda ps: torch.optim.Adam(ps))
    assert len(spec.layers) == 4 and all(set(l.measured["cpu"]) == {1, 2} for l in spec.layers)
    assert spec.layers[1].fwd_flops > 0 and spec.layers[1].act_bytes > 0 and spec.layers[-1].out_bytes == 0
    probed = [ProbedDevice("cpu", "cpu", 1e10, 8 * GB, 1e10, profile_kind="cpu"),
              ProbedDevice("emu:0", "emu x0.5", 5e9, 8 * GB, 5e9, True, 0.5, "cpu")]
    cluster = local_cluster(lambda: probed)
    p = Plan("t", 4, cfg.seq, [Pipeline([Stage("cpu", [0], (0, 2)), Stage("emu x0.5", [1], (2, 4))], 1, 2, 2),
                               Pipeline([Stage("cpu", [0], (0, 4))], 2, 1, 2)])
    ex = PlanExecutor(p, cluster, lambda: build_layers(cfg), lambda d: "cpu", make_tokens(cfg, 4), lm_loss)
    m = ex.step()
    assert m.emulated and m.mode == "virtual" and m.step_time > 0 and m.loss > 0
    # Replicas stay in sync after the all-reduce and optimizer step.
    a = dict(ex.pipes[0][0].modules[0].named_parameters())["tok.weight"]
    b = dict(ex.pipes[1][0].modules[0].named_parameters())["tok.weight"]
    assert torch.equal(a, b)
    rep = validation_report([ValidationRow("p", CostModel(cluster, spec).evaluate(p).step_time, m.step_time)], True)
    assert rep.mape >= 0 and "EMULATED" in rep.text()


@pytest.mark.needs_native
def test_fitting_emulation_reads_the_speeds_from_the_runtime():
    """The emulated cluster's demand comes from the devices HAL lists (the emu plugin parses HAL_EMU_DEVICES),
    also when the user configured it."""
    from tests.conftest import REPO, run_python
    code = "from hal.plan.local import use_fitting_emulation; print(use_fitting_emulation())"
    r = run_python(code, env={"PYTHONPATH": str(REPO), "HAL_EMU_DEVICES": "x:3:speed=0.25;y:1:speed=0.5"})
    assert r.returncode == 0, r.stderr
    assert "0.25x and 0.5x" in r.stdout and "the 4 fit" in r.stdout and "1.25 cores of demand" in r.stdout
    assert "set by the user" in r.stdout
    r = run_python(code, env={"PYTHONPATH": str(REPO), "HAL_EMU_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "1.5 cores of demand" in r.stdout and "set it to override" in r.stdout


def _link(peer, bw, lat=0.0):
    return types.SimpleNamespace(peer=peer, bandwidth=bw, latency=lat)


def test_local_cluster_reads_declared_topology():
    # Two devices of kind A on a 40 GB/s fabric (one direction declares 30: the slower counts), B alone,
    # A and B of one plugin linked at 8 GB/s, 3 us.
    a0 = ProbedDevice("x:0", "A", 1e12, 16 * GB, 1e11, links=[_link("host", 16e9), _link("x:1", 40e9, 2e-6),
                                                             _link("x:2", 8e9, 3e-6)])
    a1 = ProbedDevice("x:1", "A", 1e12, 16 * GB, 1e11, links=[_link("host", 16e9), _link("x:0", 30e9, 2e-6),
                                                             _link("x:2", 8e9, 3e-6)])
    b = ProbedDevice("x:2", "B", 5e11, 16 * GB, 5e10, links=[_link("host", 12e9), _link("x:0", 8e9, 3e-6)])
    c = local_cluster(lambda: [a0, a1, b])
    assert c.kinds["A"].chip_link.bandwidth == 30e9 and c.kinds["A"].chip_link.latency == 2e-6
    # B has no peer of its kind: half its memory bandwidth, 5 us (unchanged behaviour).
    assert c.kinds["B"].chip_link.bandwidth == 2.5e10 and c.kinds["B"].chip_link.latency == 5e-6
    assert c.cross_kind.bandwidth == 8e9 and c.cross_kind.latency == 3e-6


def test_local_cluster_kinds_of_different_plugins_meet_through_the_host():
    # No direct link between the kinds: the slower host link, both hops' latencies; unknown figures (0) fall
    # back to half the memory bandwidth and 5 us.
    a = ProbedDevice("p:0", "A", 1e12, 16 * GB, 1e11, links=[_link("host", 16e9, 1e-6)])
    b = ProbedDevice("q:0", "B", 1e12, 16 * GB, 1e11, links=[_link("host", 0.0, 0.0)])
    c = local_cluster(lambda: [a, b])
    assert c.cross_kind.bandwidth == 16e9 and c.cross_kind.latency == 2 * 5e-6
    # Without any declared topology: no cross-kind path (the cost model uses the nodes' links), as before.
    plain = local_cluster(lambda: [ProbedDevice("p:0", "A", 1e12, 16 * GB, 1e11),
                                   ProbedDevice("q:0", "B", 1e12, 16 * GB, 1e11)])
    assert plain.cross_kind is None and plain.kinds["A"].chip_link.bandwidth == 5e10


def test_default_probe_takes_the_plugins_links(monkeypatch):
    import hal.plan.profile_devices as pd
    monkeypatch.setattr(pd, "cached_profile", lambda *a, **k: _fake_profile())
    props = types.SimpleNamespace(name="Emulated", emulated=True, relative_speed=1.0, total_memory=8 * 2 ** 30)
    links = [[_link("host", 16e9), _link("emu:1", 20e9)], [_link("host", 16e9), _link("emu:0", 20e9)]]
    devs = [types.SimpleNamespace(name=f"emu:{i}", properties=props, links=lambda i=i: links[i]) for i in range(2)]
    probed = default_probe(hal_devices=lambda: devs)
    assert probed[0].links == links[0]
    (kind,) = local_cluster(lambda: probed).kinds.values()
    assert kind.chip_link.bandwidth == 20e9


def test_profiled_activation_bytes_count_each_storage_once_and_no_parameters():
    """A layer whose forward saves its weight (Linear) and one tensor twice (x * x, and a view of it): the
    activation bytes are the input once and x * x's storage once; the weight is a parameter, not an activation."""
    import torch

    from hal.plan.profile_layers import profile_torch_layers

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8, bias=False)

        def forward(self, x):
            y = self.lin(x)          # saves x (the input) and the weight
            z = y * y                # saves y twice
            return (z.view(-1) * z.view(-1)).view_as(z)  # saves views of z's storage twice

    spec = profile_torch_layers([Layer()], lambda b: torch.randn(b, 8), micro_batches=(2,), repeats=1, warmup=0)
    # input (2 x 8), y, z: three fp32 storages of 16 elements, per sample of 2.
    assert spec.layers[0].act_bytes == 3 * 16 * 4 / 2
