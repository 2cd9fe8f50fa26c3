"""`Module.to("hal:N")` and back keep Parameter objects, as `.to("cuda")` does.

torch converts a module's parameters in place (`param.data = converted`) only when the two tensors pass
`_has_compatible_shallow_copy_type`, a C++ check that knows only torch's own dense backends (CPU, CUDA, MPS,
HIP, XPU, HPU, MTIA). Between `cpu` and `hal` it fails, so `Module._apply` (behind `.to()`, `.cpu()`, `.hal()`,
`.half()`, `to_empty()`, ...) puts a *new* Parameter into the module: tied weights come apart, and an
optimizer built before the move keeps stepping the old CPU tensors while the model trains nothing.

`install()` wraps `Module._apply`: after torch's own conversion of a module, every parameter that torch
replaced in a conversion between a hal tensor and another dense tensor gets the converted tensor swapped into
the original Parameter object (`torch.utils.swap_tensors`: data, device, dtype and `.grad`), which goes back
into the module. The object keeps its class and attributes. A parameter shared by several modules is
converted once and stays shared, as on CUDA. Every other conversion (cpu<->cpu, cpu<->cuda, to or from meta,
with `torch.__future__`'s overwrite or swap flags set) is left exactly to torch. Buffers are untouched: torch
assigns converted buffers anew on every device (`module._buffers[name] = fn(buf)`), so `m.running_mean`
after `.to()` is a new tensor on CPU and CUDA alike.

When a parameter cannot be swapped (torch refuses while something else holds its tensor: a view of it kept
alive, or a weak reference), the module keeps torch's new Parameter and a RuntimeWarning names it.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import torch
from torch import nn

_installed = False


def _involves_hal(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Whether torch would have converted in place had `hal` been on its list of dense backends."""
    devices = (before.device.type, after.device.type)
    return ("hal" in devices and "meta" not in devices
            and before.layout == torch.strided and after.layout == torch.strided)


def _adopt(param: nn.Parameter, converted: nn.Parameter) -> None:
    """Moves `converted`'s tensor (and its .grad) into `param`; `param` keeps its identity, class and attributes.

    swap_tensors also swaps class and `__dict__`; giving `converted` param's class and dict first makes that
    part of the swap a no-op."""
    converted.__class__ = type(param)
    converted.__dict__ = param.__dict__
    param.grad = None  # torch already put the converted .grad on `converted`; the old one goes with the old data.
    torch.utils.swap_tensors(param, converted)


def _keep_parameters(module: nn.Module, before: dict[str, Any]) -> None:
    adopted: set[int] = set()
    for key, old in before.items():
        new = module._parameters.get(key)
        if old is None or new is None or new is old:
            continue
        if id(old) in adopted:  # A second name of the same Parameter in this module: converted already.
            module._parameters[key] = old
            continue
        if not _involves_hal(old, new):
            continue
        try:
            _adopt(old, new)
        except (RuntimeError, TypeError) as e:
            warnings.warn(f"hal: {module._get_name()}.{key} is a new Parameter after this conversion (torch could not "
                          f"swap its tensor: {e}); rebuild optimizers and re-tie weights that referred to the old "
                          f"one", RuntimeWarning, stacklevel=4)
            continue
        adopted.add(id(old))
        module._parameters[key] = old


def install() -> None:
    """Wraps `torch.nn.Module._apply` (once per process; idempotent)."""
    global _installed
    if _installed:
        return
    torch_apply: Callable[..., nn.Module] = nn.Module._apply

    @functools.wraps(torch_apply)
    def _apply(self: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        before = dict(self._parameters)
        result = torch_apply(self, fn, recurse)  # Children first: each goes through this wrapper on its own.
        if not torch.__future__.get_overwrite_module_params_on_conversion():
            _keep_parameters(self, before)
        return result

    nn.Module._apply = _apply
    _installed = True
