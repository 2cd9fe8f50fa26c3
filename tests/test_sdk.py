"""The plugin SDK from a vendor's side (docs/plugin-sdk.md, "Building outside HAL's tree"): the null sample,
copied out of the installed package into a folder of its own, renamed, configured with
`-Dhal_DIR=$(hal sdk --cmake-dir)` and built, then loaded through HAL_PLUGIN_PATH and reached from torch.

Everything comes from the hal that Python imports (an in-place build, an editable install or a wheel), never
from a source tree: `hal sdk` is run as `python -m hal.cli sdk` with this interpreter. Self-contained (no
tests.conftest), so it also runs copied next to an installed wheel.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.needs_native, pytest.mark.timeout(600)]

STEP_TIMEOUT = 240  # Seconds for one configure, build or run.


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def python(*args: str, package_root: Path | None = None, env: dict | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """This interpreter on the hal that this process imported (or the one under package_root), never on one
    found through the current folder (-P)."""
    root = package_root or hal_package().parent
    path = os.pathsep.join([str(root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-P", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          cwd=cwd, env={**os.environ, **(env or {}), "PYTHONPATH": path})


def hal_sdk(*args: str, package_root: Path | None = None) -> subprocess.CompletedProcess:
    return python("-m", "hal.cli", "sdk", *args, package_root=package_root)


def sdk_path(flag: str) -> Path:
    proc = hal_sdk(flag)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_absolute() and path.exists(), proc.stdout
    return path


def hal_package() -> Path:
    import hal

    return Path(hal.__file__).resolve().parent


@pytest.fixture(scope="module")
def tools():
    for tool in ("cmake", os.environ.get("CC", "cc")):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool} to build a plugin with")


@pytest.fixture(scope="module")
def mychip(tools, tmp_path_factory) -> Path:
    """docs/plugin-sdk.md's walkthrough: the null sample copied to mychip/, renamed, configured, built."""
    root = tmp_path_factory.mktemp("vendor")
    source = root / "mychip"
    shutil.copytree(sdk_path("--samples") / "null", source)
    (source / "null_plugin.c").rename(source / "mychip_plugin.c")
    for file in source.iterdir():  # sed -i 's/null/mychip/g'
        file.write_text(file.read_text().replace("null", "mychip"))
    build = root / "build"
    run(["cmake", "-S", str(source), "-B", str(build), f"-Dhal_DIR={sdk_path('--cmake-dir')}"], cwd=root)
    run(["cmake", "--build", str(build)], cwd=root)
    yield build / "plugins" / "libhal_plugin_mychip.so"
    shutil.rmtree(root, ignore_errors=True)


def test_sdk_paths_are_in_the_imported_package():
    package = hal_package()
    assert sdk_path("--cmake-dir") == package / "sdk" / "cmake"
    assert (sdk_path("--cmake-dir") / "halConfigVersion.cmake").is_file()
    assert (sdk_path("--include") / "hal" / "hal.h").is_file()
    assert os.access(sdk_path("--smoke"), os.X_OK)
    summary = hal_sdk()
    assert summary.returncode == 0 and "ABI 1.2" in summary.stdout
    assert str(package / "sdk" / "plugin-sdk.md") in summary.stdout  # The guide travels with the SDK.


def test_sdk_missing_says_what_is_missing(tmp_path):
    # A copy of the pure-Python package without the SDK the native build writes.
    shutil.copytree(hal_package(), tmp_path / "hal", ignore=shutil.ignore_patterns("sdk", "*.so", "plugins"))
    proc = hal_sdk("--cmake-dir", package_root=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "CMake package (halConfig.cmake)" in proc.stderr
    assert str(tmp_path / "hal" / "sdk" / "cmake" / "halConfig.cmake") in proc.stderr


def test_the_plugin_builds_out_of_tree_and_loads(mychip):
    assert mychip.is_file(), "hal_add_plugin writes build/plugins/libhal_plugin_NAME.so"
    info = python("-m", "hal.cli", "info", str(mychip), "--json")
    assert info.returncode == 0, info.stdout + info.stderr
    record = json.loads(info.stdout)
    assert record["name"] == "mychip" and record["abi"] == "1.2" and record["version"] == "0.1.0"
    assert record["error"] is None


def test_the_smoke_driver_names_what_the_skeleton_lacks(mychip):
    proc = subprocess.run([str(sdk_path("--smoke")), str(mychip)], capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "mychip plugin: memory_allocate is not implemented" in proc.stdout
    assert re.search(r"^[1-9][0-9]* passed, [1-9][0-9]* failed$", proc.stdout, re.M), proc.stdout


def test_torch_reaches_the_plugin_through_hal_plugin_path(mychip, tmp_path):
    # From another folder, so nothing is found through the current one.
    code = textwrap.dedent("""
        import json, torch, hal
        device = next(d for d in hal.devices() if d.plugin == "mychip")
        try:
            torch.ones(4, device=f"hal:{device.index}")
            error = None
        except RuntimeError as e:
            error = str(e)
        print(json.dumps({"name": device.name, "path": device.plugin_path, "model": device.properties.name,
                          "error": error}))
    """)
    proc = python("-c", code, cwd=tmp_path, env={"HAL_PLUGIN_PATH": str(mychip.parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["name"] == "mychip:0" and Path(seen["path"]) == mychip and seen["model"] == "mychip device"
    # The skeleton has no memory yet: torch's allocation reaches its entries and says so.
    assert seen["error"] and "mychip plugin:" in seen["error"] and "is not implemented" in seen["error"]


@pytest.fixture(scope="module")
def emu_copy(tools, tmp_path_factory) -> Path:
    """The worked sample: samples/emu and samples/common copied side by side, configured and built."""
    root = tmp_path_factory.mktemp("vendor_emu")
    for sample in ("emu", "common"):
        shutil.copytree(sdk_path("--samples") / sample, root / sample)
    run(["cmake", "-S", str(root / "emu"), "-B", str(root / "build"), f"-Dhal_DIR={sdk_path('--cmake-dir')}"],
        cwd=root)
    run(["cmake", "--build", str(root / "build"), "-j2"], cwd=root)
    yield root / "build" / "plugins" / "libhal_plugin_emu.so"
    shutil.rmtree(root, ignore_errors=True)


def test_the_emu_sample_builds_out_of_tree_and_computes_from_torch(emu_copy, tmp_path):
    smoke = subprocess.run([str(sdk_path("--smoke")), str(emu_copy), "npu:2:mem=64MiB"], capture_output=True,
                           text=True, timeout=STEP_TIMEOUT)
    assert smoke.returncode == 0 and ", 0 failed" in smoke.stdout, smoke.stdout + smoke.stderr
    # Loaded alone (the bundled emu has the same name and would win), then used from torch: the tensor lives
    # on the copy's device and its kernels (emu_ops.c) run the arithmetic.
    code = textwrap.dedent(f"""
        import json, hal
        hal.init([{str(emu_copy)!r}], use_package_plugins=False, use_env=False, configs={{"emu": "npu:1"}})
        import torch
        x = torch.arange(6, dtype=torch.float32, device="hal:0")
        y = (x * 2 + 1).cpu().tolist()
        stats = torch.hal.op_stats()
        print(json.dumps({{"devices": [(d.name, d.plugin_path) for d in hal.devices()], "y": y,
                          "native_mul": stats["aten::mul.Tensor"]["native"]["calls"]}}))
    """)
    proc = python("-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["devices"] == [["emu:0", str(emu_copy)]]
    assert seen["y"] == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]
    assert seen["native_mul"] >= 1
