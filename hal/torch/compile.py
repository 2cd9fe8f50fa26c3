"""torch.compile on hal tensors: which backends work, and a clear error for the one that cannot.

`backend="eager"` and `backend="aot_eager"` work: dynamo (and AOTAutograd, for aot_eager) trace the program and
run it with hal's kernels, forward and backward. The default backend, inductor, generates fused C++ / Triton
kernels for the CPU and CUDA; HAL has no code generator, and C++ kernels made for the CPU would touch device
memory from the host. So inductor refuses hal graphs at their first call, with an error that names the backends
that work.

Inductor finds a PrivateUse1 backend's code generators by name in the device module (`torch.hal.Scheduling`,
`torch.hal.PythonWrapperCodegen`, `torch.hal.CppWrapperCodegen`, `torch.hal.WrapperFxCodegen`; see
torch/_inductor/codegen/common.py, init_backend_registration): each of them is
`InductorUnsupported`, which raises that error.
"""
from __future__ import annotations

from typing import Any, NoReturn

WORKING_BACKENDS = ("eager", "aot_eager")


def _refuse() -> NoReturn:
    raise RuntimeError(
        "hal: torch.compile's backend 'inductor' (the default) cannot compile graphs with tensors on hal devices: "
        "it generates CPU/CUDA kernels and HAL has no code generator. Use "
        + " or ".join(f"torch.compile(..., backend={b!r})" for b in WORKING_BACKENDS) + ", which run hal's kernels.")


class _RefusingClass(type):
    @property
    def supports_caching(cls) -> NoReturn:
        # The first thing inductor reads of a device's wrapper codegen class, for every graph, before lowering.
        _refuse()


class InductorUnsupported(metaclass=_RefusingClass):
    """Stands in for inductor's scheduling and wrapper code generators of the hal device: using one raises."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> NoReturn:  # How inductor makes a wrapper codegen.
        _refuse()
