"""Where the plugin SDK of this installation is: what a vendor needs to build a device plugin outside HAL's
source tree (docs/plugin-sdk.md).

    cmake -S mychip -B build -Dhal_DIR="$(hal sdk --cmake-dir)"   # find_package(hal CONFIG)
    cc -I"$(hal sdk --include)" ...                                # the ABI headers alone
    cp -r "$(hal sdk --samples)/null" mychip                       # the skeleton to start from
    "$(hal sdk --smoke)" build/plugins/libhal_plugin_mychip.so     # the C smoke driver

The native build writes the SDK into the package, next to hal._C (cmake/sdk.cmake), so a wheel ships it and
an in-place or editable build has it in the source package. Needs neither hal._C nor torch.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["SDK_DIR", "SdkMissing", "cmake_dir", "include_dir", "samples_dir", "smoke_driver", "guide",
           "abi_version"]

SDK_DIR = Path(__file__).resolve().parent / "sdk"


class SdkMissing(FileNotFoundError):
    """A part of the SDK is not in this installation of hal (the native build was not run, or failed)."""


def _part(relative: str, marker: str, what: str) -> Path:
    path = SDK_DIR / relative
    if not (path / marker if marker else path).is_file():
        raise SdkMissing(
            f"the plugin SDK's {what} is missing from this installation of hal: {path / marker if marker else path} "
            f"does not exist. HAL's native build writes the SDK into the package ({SDK_DIR}); build it "
            f"(`python setup.py build_ext --inplace` in a checkout, or install a wheel of HAL)")
    return path


def cmake_dir() -> Path:
    """The folder of halConfig.cmake: pass it as -Dhal_DIR=..., for find_package(hal CONFIG)."""
    return _part("cmake", "halConfig.cmake", "CMake package (halConfig.cmake)")


def include_dir() -> Path:
    """The folder to put on the include path: it holds hal/hal.h and the other ABI headers."""
    return _part("include", "hal/plugin.h", "ABI headers (hal/plugin.h)")


def samples_dir() -> Path:
    """The folder of the sample plugins' sources: null/ (the skeleton to copy), which builds on its own."""
    return _part("samples", "null/CMakeLists.txt", "sample plugins (null/CMakeLists.txt)")


def smoke_driver() -> Path:
    """The built smoke driver: `plugin_smoke PLUGIN.so [CONFIG]` (its source is src/plugin_smoke.c)."""
    return _part("bin/plugin_smoke", "", "smoke driver (bin/plugin_smoke)")


def guide() -> Path:
    """docs/plugin-sdk.md, the vendor's guide, as the SDK ships it."""
    return _part("plugin-sdk.md", "", "guide (plugin-sdk.md)")


def abi_version() -> tuple[int, int]:
    """The ABI version the SDK's headers define (HAL_ABI_VERSION_MAJOR / _MINOR of hal/plugin.h)."""
    fields = {}
    for line in (include_dir() / "hal" / "plugin.h").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith("HAL_ABI_VERSION_M"):
            fields[parts[1]] = int(parts[2])
    return fields["HAL_ABI_VERSION_MAJOR"], fields["HAL_ABI_VERSION_MINOR"]
