"""The opencl plugin (devices/opencl) on the OpenCL runtime of this machine: pocl in CI, installed by `make setup`.

The device contract and every declared kernel are checked by the conformance suite (tests/test_contract.py and
tests/test_operators_conformance.py include opencl:0); this file covers what is the plugin's own: loading without
OpenCL, its memory scheme, programs, and models training on the device with the CPU's losses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hal

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "hal" / "plugins" / "libhal_plugin_opencl.so"

pytestmark = pytest.mark.needs_native


def opencl_device():
    devices = [d for d in hal.devices() if d.plugin == "opencl"]
    if not devices:
        pytest.skip("no OpenCL device here (install pocl-opencl-icd and ocl-icd-libopencl1: `make setup` does)")
    return devices[0]


def fit(model, opt, batches, loss_fn, device) -> list[float]:
    """The losses of one training step per (input, target) batch, on |device|."""
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x.to(device)), y.to(device))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run(code: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_no_opencl_library_means_zero_devices_not_an_error():
    out = run(f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
print(json.dumps({{"devices": [d.name for d in hal.devices()], "errors": [str(e) for e in hal.load_errors()]}}))
""", env={"HAL_OPENCL_LIBRARY": "/nonexistent/libOpenCL.so.1", "HAL_OPENCL_DEBUG": "1"})
    assert out == {"devices": [], "errors": []}


def test_the_device_is_real_and_its_memory_is_not_the_hosts():
    d = opencl_device()
    p = d.properties
    assert not p.emulated and not p.host_addressable and not p.mappable
    assert p.total_memory > 0 and p.name and p.vendor


def test_interior_pointers_and_bad_frees():
    d = opencl_device()
    buf = d.alloc(4096)
    x = np.arange(1024, dtype=np.float32)
    buf.copy_from(x)
    assert np.array_equal(buf[1024:2048].to_numpy(np.float32), x[256:512])  # base + offset, as memory.h promises
    with pytest.raises(hal.InvalidArgument, match="not an allocation|points inside one"):
        d._native.raw_free(buf.ptr + 256)


def test_out_of_memory_names_the_figures():
    d = opencl_device()
    with pytest.raises(hal.OutOfMemory, match=r"tried to allocate .* in use.* capacity"):
        d.alloc(d.properties.total_memory * 2)
    with pytest.raises(hal.OutOfMemory, match="CL_DEVICE_MAX_MEM_ALLOC_SIZE"):  # more than one buffer may hold
        d.alloc(d.properties.total_memory * 2)


SOURCE = """
__kernel void scale(__global float* x, ulong x_off, float a, long n) {
  __global float* p = (__global float*)((__global char*)x + x_off);
  long i = get_global_id(0);
  if (i < n) p[i] *= a;
}
"""


def test_a_program_built_at_run_time_launches_on_a_stream_with_buffer_offsets():
    d = opencl_device()
    buf = d.alloc(4096)
    x = np.arange(1024, dtype=np.float32)
    buf.copy_from(x)
    k = hal.Program(d, SOURCE).kernel("scale")
    k.launch([512], [buf[1024:], np.float32(2.0), np.int64(512)])  # an interior buffer: (buffer, byte offset)
    d.synchronize()
    out = buf.to_numpy(np.float32)
    assert np.array_equal(out[:256], x[:256]) and np.array_equal(out[256:768], 2 * x[256:768])
    assert np.array_equal(out[768:], x[768:])


def test_arguments_that_do_not_match_the_kernels_parameters_are_refused_not_run():
    # The OpenCL runtime reads whatever it is given (an offset as a buffer handle: pocl then crashes the process);
    # the plugin checks each argument against the kernel's parameters first and names the mismatch.
    d = opencl_device()
    buf = d.alloc(4096)
    buf.copy_from(np.ones(1024, dtype=np.float32))
    no_offset = hal.Program(d, "__kernel void k(__global float* x, float a) { x[get_global_id(0)] *= a; }")
    with pytest.raises(hal.InvalidArgument, match=r"kernel 'k' has 2 parameters; the 2 arguments given fill 3"):
        no_offset.kernel("k").launch([4], [buf, np.float32(2.0)])
    k = hal.Program(d, SOURCE).kernel("scale")
    with pytest.raises(hal.InvalidArgument, match=r"'scale' argument 1: parameter 2 is a float of 4 bytes.*gives 8"):
        k.launch([4], [buf, np.float64(2.0), np.int64(4)])
    with pytest.raises(hal.InvalidArgument, match=r"'scale' argument 0 \(BYTES\) needs a value.*__global pointer"):
        k.launch([4], [np.int64(0), np.int64(0), np.float32(2.0), np.int64(4)])
    with pytest.raises(hal.InvalidArgument, match=r"has 4 parameters; the 2 arguments given fill 3"):
        k.launch([4], [buf, np.float32(2.0)])
    d.synchronize()  # nothing was run: the stream is healthy and the buffer untouched
    assert np.array_equal(buf.to_numpy(np.float32), np.ones(1024, dtype=np.float32))


def test_a_build_error_carries_the_build_log_and_formats_are_named():
    d = opencl_device()
    with pytest.raises(hal.InvalidArgument, match="clBuildProgram.*CL_BUILD_PROGRAM_FAILURE.*undeclared|error"):
        hal.Program(d, "__kernel void k() { this_is_not_c; }")
    with pytest.raises(hal.Unimplemented, match="takes: opencl-c"):
        hal.Program(d, b"\x03\x02\x23\x07", format="ptx")
    with pytest.raises(hal.InvalidArgument, match="no kernel 'nope'"):
        hal.Program(d, SOURCE).kernel("nope")


def test_a_gpt_trains_on_the_device_with_the_cpus_losses():
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401
    from hal.train.model import CONFIGS, build_layers, loss_fn

    dev = opencl_device().torch_device
    cfg = CONFIGS["tiny"]

    def train(device):
        torch.manual_seed(0)
        model = torch.nn.Sequential(*build_layers(cfg)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
        g = torch.Generator().manual_seed(1)
        batches = [torch.randint(0, cfg.vocab, (4, cfg.seq + 1), generator=g) for _ in range(20)]
        return fit(model, opt, [(t[:, :-1], t[:, 1:]) for t in batches], loss_fn, device)

    cpu = train("cpu")
    torch.hal.reset_op_stats()
    on_device = train(dev)
    np.testing.assert_allclose(on_device, cpu, rtol=1e-4)
    stats = torch.hal.op_stats()
    native = sum(s["native"]["calls"] for s in stats.values())
    fallback = sum(s["fallback"]["calls"] for s in stats.values())
    assert native > 0 and fallback == 0, {k: v for k, v in stats.items() if v["fallback"]["calls"]}  # no op falls back
    for op in ("aten::mm", "aten::bmm", "aten::_safe_softmax", "aten::gelu", "aten::addcdiv_"):
        assert stats[op]["native"]["calls"] > 0 and stats[op]["fallback"]["calls"] == 0, op


def test_gemm_of_large_and_transposed_operands_in_chunks_matches_the_cpu():
    # On a CPU device mm/bmm pack their operands into stream scratch in chunks of K, M and N (ops_gemm.c): sizes
    # past each chunk (K > 1024, M and N > 2048), edges that are not whole blocks, transposed and offset views,
    # and a strided result each take a path of their own.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    g = torch.Generator().manual_seed(0)
    for m, k, n in [(1, 1, 1), (7, 5, 3), (100, 37, 300), (2100, 40, 33), (33, 2100, 50), (40, 30, 2100)]:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
            A = a.t().contiguous().t() if ta else a
            B = b.t().contiguous().t() if tb else b
            got = (A.to(dev) @ B.to(dev)).cpu()
            want = (A.double() @ B.double()).float()
            assert (got - want).abs().max() <= 1e-5 * (want.abs().max() + 1), (m, k, n, ta, tb)
    x, y = torch.randn(5, 70, 40, generator=g), torch.randn(5, 50, 40, generator=g).transpose(1, 2)
    np.testing.assert_allclose(torch.bmm(x.to(dev), y.to(dev)).cpu(), torch.bmm(x, y), rtol=1e-4, atol=1e-4)
    out = torch.full((70, 100), 7.0, device=dev)
    torch.mm(x[0].to(dev), y[0].to(dev), out=out[:, ::2])  # a strided result; the columns between untouched
    np.testing.assert_allclose(out.cpu()[:, ::2], x[0] @ y[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(out.cpu()[:, 1::2], torch.full((70, 50), 7.0))


@pytest.mark.parametrize("options", [{"fused": True}, {"fused": True, "amsgrad": True, "maximize": True},
                                     {"foreach": True}, {}], ids=["fused", "fused-amsgrad-maximize", "foreach",
                                                                  "default"])
def test_adamw_steps_on_the_device_as_on_the_cpu_and_fused_is_one_kernel(options):
    # fused=True is aten::_fused_adamw_ (kernels/optim.cl): one call for every parameter; the default on a hal
    # device is foreach, whose per-tensor ops (mul.out among them) must not fall back either.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device

    def steps(device):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(40, 300), torch.nn.Tanh(), torch.nn.Linear(300, 7)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, **options)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x = torch.randn(16, 40, generator=g).to(device)
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return [p.detach().cpu() for p in model.parameters()]

    cpu = steps("cpu")
    torch.hal.reset_op_stats()
    on_device = steps(dev)
    for got, want in zip(on_device, cpu):  # The gradients differ in rounding (the kernels sum in other orders).
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    stats = torch.hal.op_stats()
    assert not {k for k, v in stats.items() if v["fallback"]["calls"]}
    if options.get("fused"):
        assert stats["aten::_fused_adamw_"]["native"]["calls"] == 5  # once a step, for all four parameters


@pytest.mark.parametrize("amsgrad, maximize, found_inf", [(False, False, 0.0), (True, True, 0.0), (False, False, 1.0)])
def test_fused_adamw_matches_the_cpus_on_the_same_gradients(amsgrad, maximize, found_inf):
    # The kernel alone, on identical inputs: the gradient unscaled by grad_scale, nothing written where found_inf.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    g = torch.Generator().manual_seed(0)
    state = [torch.randn(1000, generator=g) for _ in range(2)] + [torch.rand(1000, generator=g) for _ in range(2)]
    result = []
    for device in ("cpu", dev):
        p, grad, m, v, vmax = (t.clone().to(device) for t in (state[0], state[1] * 4, state[1], state[2], state[3]))
        torch._fused_adamw_([p], [grad], [m], [v], [vmax] if amsgrad else [], [torch.full((), 3.0, device=device)],
                            lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.01, eps=1e-8, amsgrad=amsgrad,
                            maximize=maximize, grad_scale=torch.tensor(4.0, device=device),
                            found_inf=torch.tensor(found_inf, device=device))
        result.append([t.cpu() for t in (p, m, v, vmax)])
    for got, want in zip(result[1], result[0]):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert torch.equal(result[1][0], state[0]) == (found_inf == 1.0)  # the whole step skipped on inf


def test_a_cnn_trains_on_the_device_with_the_cpus_losses():
    # Convolutions (im2col + GEMM), max pooling and their backwards run natively (ops_conv.c).
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device

    def train(device):
        torch.manual_seed(0)
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(16 * 7 * 7, 10)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
                   for _ in range(20)]
        return fit(model, opt, batches, torch.nn.functional.cross_entropy, device)

    cpu = train("cpu")
    torch.hal.reset_op_stats()
    on_device = train(dev)
    np.testing.assert_allclose(on_device, cpu, rtol=1e-4)
    stats = torch.hal.op_stats()
    assert not {k for k, v in stats.items() if v["fallback"]["calls"]}  # no op falls back
    for op in ("aten::convolution", "aten::convolution_backward", "aten::max_pool2d_with_indices",
               "aten::max_pool2d_with_indices_backward"):
        assert stats[op]["native"]["calls"] == 40, op  # two a step


@pytest.mark.parametrize("case", ["chunked", "strided-1d", "dilated-grouped-no-bias"])
def test_convolution_and_its_gradients_match_the_cpu(case):
    # "chunked": 8 images of 10.5 MB of columns each do not fit the 64 MB of temporary memory at once, so the
    # images go in two chunks and the weight's gradient of the second is summed into the first's.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401
    import torch.nn.functional as F

    dev = opencl_device().torch_device
    x_shape, w_shape, kwargs = {
        "chunked": ((8, 64, 64, 64), (64, 64, 3, 3), {"padding": 1}),
        "strided-1d": ((3, 4, 50), (6, 4, 5), {"stride": 3, "padding": 2}),
        "dilated-grouped-no-bias": ((2, 6, 20, 17), (9, 2, 3, 2), {"dilation": (2, 3), "groups": 3, "stride": (1, 2)}),
    }[case]
    conv = F.conv1d if len(x_shape) == 3 else F.conv2d
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(x_shape, generator=g), torch.randn(w_shape, generator=g), torch.randn(w_shape[0], generator=g)
    bias = None if "no-bias" in case else b
    results = []
    for device in ("cpu", dev):
        xs, ws = x.clone().to(device).requires_grad_(), w.clone().to(device).requires_grad_()
        bs = bias.clone().to(device).requires_grad_() if bias is not None else None
        y = conv(xs, ws, bs, **kwargs)
        y.backward(torch.ones_like(y) * torch.linspace(-1, 1, y.numel(), device=device).reshape(y.shape))
        results.append([t.detach().cpu() for t in (y, xs.grad, ws.grad) + ((bs.grad,) if bs is not None else ())])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_copies_between_dtypes_run_on_the_device_and_match_the_cpu():
    # copy_ between any two of ten dtypes (cast_any: integers through i64, floats through f64, f16 / bf16 by
    # their bits), from a strided and broadcast source: the values torch's CPU gives, with no staging.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool]
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(6, 7, generator=g) * 100, torch.tensor([[0.0, -0.0, 1e-3, -1.5, 65504.0, 2.5, -3.5]])])
    for a in dtypes:
        src = x.to(a)
        on_device = src.to(dev)
        for b in dtypes:
            torch.hal.reset_op_stats()
            out = torch.empty(7, 4, 7, dtype=b, device=dev)
            out.copy_(on_device[:, None, :].expand(7, 4, 7))
            want = torch.empty(7, 4, 7, dtype=b).copy_(src[:, None, :].expand(7, 4, 7))
            assert torch.equal(out.cpu(), want), (a, b)
            assert torch.hal.op_stats()["aten::copy_"]["native"]["calls"] == 1, (a, b)


def test_gather_and_scatter_add_match_the_cpu_and_gathers_backward_runs_natively():
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, 7, generator=g)
    for dim in (0, 1, 2, -1):
        idx = torch.randint(0, x.shape[dim], (4, 3, 5), generator=g)  # repeated indices: sums in order
        src = torch.randn(4, 3, 5, generator=g)
        torch.hal.reset_op_stats()
        assert torch.equal(torch.gather(x.to(dev), dim, idx.to(dev)).cpu(), torch.gather(x, dim, idx))
        assert torch.equal(torch.gather(x.long().to(dev), dim, idx.to(dev)).cpu(), torch.gather(x.long(), dim, idx))
        want = x.scatter_add(dim, idx, src)
        assert torch.equal(x.to(dev).scatter_add(dim, idx.to(dev), src.to(dev)).cpu(), want)
        inplace = x.to(dev).transpose(0, 1).contiguous().transpose(0, 1)  # a strided self, written in place
        inplace.scatter_add_(dim, idx.to(dev), src.to(dev))
        assert torch.equal(inplace.cpu(), want)
        stats = torch.hal.op_stats()
        assert all(stats[op]["native"]["calls"] and not stats[op]["fallback"]["calls"]
                   for op in ("aten::gather", "aten::scatter_add", "aten::scatter_add_")), stats
    xs = x.to(dev).requires_grad_()
    idx = torch.randint(0, 5, (3, 6, 7), generator=g)
    torch.gather(xs, 0, idx.to(dev)).square().sum().backward()  # the backward is zeros + scatter_add_
    xc = x.clone().requires_grad_()
    torch.gather(xc, 0, idx).square().sum().backward()
    np.testing.assert_allclose(xs.grad.cpu(), xc.grad, rtol=1e-6)


def test_an_index_out_of_range_is_the_streams_error_naming_the_op_then_the_stream_works():
    # The CPU raises at the call; a device finds out when the kernel runs: its stream's next synchronize
    # raises, naming the operator (stream.h's sticky error), and work after that runs normally.
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    x = torch.arange(6.0).reshape(2, 3)
    cases = [
        ("aten::gather", lambda t: torch.gather(t, 1, torch.tensor([[0, 3]], device=dev))),
        ("aten::index_select", lambda t: torch.index_select(t, 0, torch.tensor([2], device=dev))),
        ("aten::scatter_add", lambda t: t.scatter_add(0, torch.tensor([[-1]], device=dev), t[:1, :1])),
        ("aten::nll_loss_forward", lambda t: torch.nn.functional.nll_loss(t, torch.tensor([0, 5], device=dev))),
    ]
    for name, call in cases:
        call(x.to(dev))
        with pytest.raises(RuntimeError, match=f"{name}.*index out of range"):
            torch.hal.synchronize(dev)
        good = torch.gather(x.to(dev), 1, torch.tensor([[2, 0]], device=dev))
        torch.hal.synchronize(dev)
        assert good.cpu().tolist() == [[2.0, 0.0]]


def test_a_host_function_on_an_idle_stream_runs_on_the_streams_thread_not_the_callers():
    # OpenCL may run an event callback at once in the thread that sets it when the event is complete already
    # (pocl does): the plugin hands the function to the stream's host thread instead.
    import threading

    d = opencl_device()
    s = d.Stream()
    s.synchronize()
    ran_on, gate = [], threading.Event()
    s._native.launch_host_func(lambda: (ran_on.append(threading.get_ident()), gate.wait(20)))
    assert not s.query()  # launch_host_func returned while the function holds the stream
    gate.set()
    s.synchronize()
    assert ran_on and ran_on[0] != threading.get_ident()


def test_half_precision_and_promoted_operands_compute_in_float_and_round_to_nearest_even():
    # ew_any: f16 / bf16 elementwise ops load as float, compute in float and round the result once (to nearest
    # even), so each result is exactly the f32 computation rounded; operands of other dtypes (bool, i64)
    # promote to the floating result as on the CPU. All-integer calls are declined (they fall back).
    torch = pytest.importorskip("torch")
    import hal.torch  # noqa: F401

    dev = opencl_device().torch_device
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 17, generator=g), torch.randn(17, generator=g)
    for dt in (torch.float16, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        for f in (torch.mul, torch.div, lambda p, q: torch.add(p, q, alpha=-3.125), lambda p, q: torch.exp(p)):
            want = f(x.float(), y.float()).to(dt)
            assert torch.equal(f(x.to(dev), y.to(dev)).cpu(), want), (dt, f)
        inplace = x.to(dev)
        inplace.mul_(y.to(dev))
        assert torch.equal(inplace.cpu(), (x.float() * y.float()).to(dt))
    mask, ints = torch.rand(300, 17, generator=g) > 0.5, torch.randint(-9, 9, (17,), generator=g)
    torch.hal.reset_op_stats()
    assert torch.equal((a.to(dev) * mask.to(dev)).cpu(), a * mask)
    assert torch.equal((a.to(dev) + ints.to(dev)).cpu(), a + ints)
    assert torch.hal.op_stats()["aten::add.Tensor"]["fallback"]["calls"] == 0
    assert torch.equal((ints.to(dev) + ints.to(dev)).cpu(), ints + ints)  # declined: runs on the CPU
    assert torch.hal.op_stats()["aten::add.Tensor"]["declined"] == 1
