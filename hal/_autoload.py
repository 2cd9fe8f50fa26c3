"""The `torch.backends` entry point: `import torch` alone makes `hal:N` devices and the `hal` distributed backend
available. Torch runs this inside `import torch`, so it never raises: a failure warns and leaves torch usable."""
from __future__ import annotations

import warnings


def autoload() -> None:
    try:
        import hal.torch  # noqa: F401 - registers the hal:N device type on import.
        from hal import collectives

        collectives.register()
    except Exception as e:  # noqa: BLE001 - a failing autoload would break `import torch` for everyone.
        warnings.warn(f"hal: the 'hal' torch backend was not registered ({type(e).__name__}: {e}); HAL devices "
                      f"are unavailable in torch. Set TORCH_DEVICE_BACKEND_AUTOLOAD=0 to skip this autoload.",
                      RuntimeWarning, stacklevel=2)
