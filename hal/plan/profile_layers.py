"""Per-layer profiles of a chain of torch modules: the measured times that replace FLOPs-based estimates.

torch is imported inside `profile_torch_layers` only; what it returns is a plain ModelSpec (model.py).
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

from hal.plan.model import LayerSpec, ModelSpec
from hal.plan.profile_devices import device_synchronizer, timed_runs

__all__ = ["profile_torch_layers"]


def _best_time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, stat: str = "min") -> float:
    """Fastest of `repeats` runs (contention from other work on the host only ever adds time), or their median
    (`stat="median"`: what a wall-clock step, itself a median, sees)."""
    times = timed_runs(fn, sync, repeats)
    return min(times) if stat == "min" else sorted(times)[(len(times) - 1) // 2]


def profile_torch_layers(layers: Sequence[Any], make_input: Callable[[int], Any], *, device: str = "cpu",
                         kind: str = "cpu", micro_batches: Sequence[int] = (1,), seq_len: int = 1,
                         name: str = "module", repeats: int = 5, warmup: int = 2,
                         optimizer: Callable[[Any], Any] | None = None,
                         loss_fn: Callable[[Any, Any], Any] | None = None, stat: str = "min",
                         tp_probe: Callable[[Any, Any], tuple[bool, float]] | None = None) -> ModelSpec:
    """Runs each layer of a chain of torch modules forward and backward on `device`, per micro-batch size.

    `make_input(mbs)` returns the first layer's input for `mbs` samples; each next layer gets the previous
    output. Records parameters, forward FLOPs (torch's FlopCounterMode), bytes saved for backward (saved-tensor
    hooks), output bytes and forward/backward times (fastest of `repeats`, autograd on, as in training) under
    `kind`. With `loss_fn(output, first_input)`, the last layer's times include the loss. With `optimizer`
    (e.g. `lambda params: torch.optim.Adam(params)`), also the optimizer step time per layer. `stat`: "min"
    (fastest of `repeats`) or "median". `tp_probe(layer, input)` -> (whether tensor parallelism splits the
    layer, the bytes its split forward all-reduces) fills LayerSpec.tp_split and tp_comm_bytes (the runtime's
    hal.parallel.tensor_parallel.probe); without it, every layer is taken to split, with no communication."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode


    dev = torch.device(device)
    sync = device_synchronizer(device)
    specs: list[LayerSpec] = []
    mods = [m.to(dev) for m in layers]
    per_mbs: dict[int, list[tuple[float, float]]] = {}
    static: list[tuple[int, float, float, float]] = []
    for mbs in micro_batches:
        x = make_input(mbs)
        x = x.to(dev) if isinstance(x, torch.Tensor) else x
        x0 = x
        times = []
        for li, m in enumerate(mods):
            inp = x.detach().requires_grad_(x.is_floating_point()) if isinstance(x, torch.Tensor) else x
            # What the layer keeps for its backward: each storage once (views and tensors saved by several ops
            # share one), parameters left out (param_memory counts them).
            saved, seen = [0], {p.untyped_storage().data_ptr() for p in m.parameters()}

            def pack(t, saved=saved, seen=seen):
                storage = t.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    saved[0] += storage.nbytes()
                return t

            last = loss_fn is not None and li == len(mods) - 1

            def run(m=m, inp=inp, last=last):
                o = m(inp)
                return loss_fn(o, x0) if last else o

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = m(inp)
                if last:
                    loss_fn(out, x0)
            grad = None if last else torch.ones_like(out) / out.numel()

            def fwd(run=run):
                run()

            def fwd_bwd(run=run, grad=grad):
                run().backward(grad)

            for _ in range(warmup):
                fwd_bwd()
            if stat == "min":
                t_f = _best_time(fwd, sync, repeats)
                t_fb = _best_time(fwd_bwd, sync, repeats)
                times.append((t_f, max(t_fb - t_f, 0.0)))
            else:  # paired runs: a burst of load on the host hits the forward and the backward figure alike
                pairs = [(_best_time(fwd, sync, 1), _best_time(fwd_bwd, sync, 1)) for _ in range(repeats)]
                t_f = statistics.median(f for f, _ in pairs)
                t_b = statistics.median(max(fb - f, 0.0) for f, fb in pairs)
                times.append((t_f, t_b))
            if mbs == micro_batches[0]:
                with FlopCounterMode(display=False) as fc:
                    with torch.no_grad():
                        m(inp)
                params = sum(p.numel() for p in m.parameters())
                split, comm = tp_probe(m, inp) if tp_probe is not None else (True, 0.0)
                static.append((params, fc.get_total_flops() / mbs, saved[0] / mbs,
                               out.numel() * out.element_size() / mbs, split, comm / mbs))
            x = out.detach()
        per_mbs[mbs] = times
    dtype_bytes = 4
    for li, m in enumerate(mods):
        params, flops, act, outb, split, comm = static[li]
        spec = LayerSpec(f"layer{li}", "module", params, float(flops), float(act),
                         float(outb) if li < len(mods) - 1 else 0.0, tp_comm_bytes=float(comm), tp_split=split)
        spec.measured[kind] = {mbs: per_mbs[mbs][li] for mbs in micro_batches}
        ps = [p for p in m.parameters()]
        if ps:
            dtype_bytes = ps[0].element_size()
        if optimizer is not None and ps:
            for p in ps:
                p.grad = torch.zeros_like(p)
            opt = optimizer(ps)
            for _ in range(warmup):
                opt.step()
            spec.measured_optimizer[kind] = _best_time(opt.step, sync, repeats, stat)
            opt.zero_grad(set_to_none=True)
        specs.append(spec)
    return ModelSpec(name, specs, seq_len, dtype_bytes)
