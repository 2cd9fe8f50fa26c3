"""The cuda plugin (devices/cuda) without a GPU: it builds, loads, and has zero devices with a clear reason when there
is no driver, and its device discovery and error translation work against FAKE driver libraries (libcuda.so
stand-ins compiled here, into tmp_path, with the system C compiler) that export the driver's entry points.

What needs a real GPU (memory, streams, events, kernels, cuBLAS, NCCL) is checked by `hal conformance` on a machine
with one; see devices/cuda/README.md."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "hal" / "plugins" / "libhal_plugin_cuda.so"
API = REPO / "devices" / "cuda" / "cuda_api.h"

pytestmark = pytest.mark.needs_native

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to build the fake driver")


def run(code: str, env: dict | None = None) -> tuple[dict, str]:
    """Runs |code| in a fresh interpreter (a plugin is initialized once per process); its last line of stdout is
    JSON. Returns it and the process's stderr."""
    full = {**os.environ, **(env or {})}
    full.pop("HAL_PLUGIN_PATH", None)
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


LIST_DEVICES = f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
print(json.dumps({{"devices": [d.name for d in hal.devices()], "errors": [str(e) for e in hal.load_errors()]}}))
"""


def driver_symbols() -> list[str]:
    """The symbols the plugin requires of libcuda (HAL_CUDA_FUNCTIONS in cuda_api.h)."""
    text = API.read_text()
    block = text[text.index("#define HAL_CUDA_FUNCTIONS(X)"):text.index("#define HAL_CUDA_OPTIONAL_FUNCTIONS")]
    symbols = re.findall(r"X\([^,]+,\s*\w+,\s*(\w+),", block)
    assert "cuInit" in symbols and "cuMemAlloc_v2" in symbols and len(symbols) > 30
    return symbols


def fake_driver(tmp_path: Path, name: str, special: str, omit: tuple[str, ...] = ()) -> Path:
    """A libcuda stand-in: the functions in |special| (C source), and every other required symbol but |omit| as a
    stub that returns CUDA_SUCCESS and writes nothing."""
    defined = set(re.findall(r"^int (\w+)\(", special, re.M))
    stubs = "\n".join(f"int {s}() {{ return 0; }}" for s in driver_symbols() if s not in defined and s not in omit)
    source = tmp_path / f"{name}.c"
    source.write_text("#include <string.h>\n#include <stddef.h>\n" + special + "\n" + stubs + "\n")
    library = tmp_path / f"{name}.so"
    subprocess.run([CC, "-shared", "-fPIC", "-w", "-o", str(library), str(source)], check=True, timeout=60)
    return library


ERROR_NAMES = r"""
int cuGetErrorName(int r, const char** s) {
  *s = r == 100 ? "CUDA_ERROR_NO_DEVICE" : r == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN"; return 0; }
int cuGetErrorString(int r, const char** s) {
  *s = r == 100 ? "no CUDA-capable device is detected" : r == 2 ? "out of memory" : "unknown error"; return 0; }
int cuDriverGetVersion(int* v) { *v = 12040; return 0; }
"""


def test_no_cuda_library_means_zero_devices_not_an_error():
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": "/nonexistent/libcuda.so.1", "HAL_CUDA_DEBUG": "1"})
    assert out == {"devices": [], "errors": []}
    assert "hal cuda: no devices: /nonexistent/libcuda.so.1 not found" in err


def test_without_debug_the_reason_is_not_printed():
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": "/nonexistent/libcuda.so.1", "HAL_CUDA_DEBUG": "0"})
    assert out == {"devices": [], "errors": []}
    assert "hal cuda" not in err


def test_the_default_library_is_libcuda_so_1():
    if any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1")):
        pytest.skip("this machine has an NVIDIA driver")
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": "", "HAL_CUDA_DEBUG": "1"})
    assert out["devices"] == [] and out["errors"] == []
    assert "libcuda.so.1 not found" in err


@needs_cc
def test_cuinit_without_a_gpu_gives_zero_devices_naming_the_cuda_error(tmp_path):
    lib = fake_driver(tmp_path, "nodevice", ERROR_NAMES + "int cuInit(unsigned f) { return 100; }\n")
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": str(lib), "HAL_CUDA_DEBUG": "1"})
    assert out == {"devices": [], "errors": []}
    assert "cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected" in err


@needs_cc
def test_a_driver_with_no_devices_gives_zero_devices_and_says_so(tmp_path):
    lib = fake_driver(tmp_path, "zero", ERROR_NAMES + "int cuDeviceGetCount(int* n) { *n = 0; return 0; }\n")
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": str(lib), "HAL_CUDA_DEBUG": "1"})
    assert out == {"devices": [], "errors": []}
    assert "the driver (CUDA 12.4) reports no devices" in err


@needs_cc
def test_a_driver_lacking_an_entry_point_gives_zero_devices_naming_it(tmp_path):
    lib = fake_driver(tmp_path, "old", ERROR_NAMES, omit=("cuMemAlloc_v2",))
    out, err = run(LIST_DEVICES, {"HAL_CUDA_LIBRARY": str(lib), "HAL_CUDA_DEBUG": "1"})
    assert out == {"devices": [], "errors": []}
    assert f"{lib} lacks the entry point cuMemAlloc_v2 (for cuMemAlloc)" in err


ONE_DEVICE = ERROR_NAMES + r"""
int cuDeviceGetCount(int* n) { *n = 1; return 0; }
int cuDeviceGetName(char* name, int len, int dev) { strncpy(name, "Fake H100", (size_t)len); return 0; }
int cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = (size_t)1 << 30; return 0; }
int cuDeviceGetAttribute(int* v, int attribute, int dev) {
  switch (attribute) {
    case 16: *v = 132; break;     /* SMs */
    case 13: *v = 1980000; break; /* kHz */
    case 75: *v = 9; break;       /* compute capability 9.0 */
    case 76: *v = 0; break;
    case 36: *v = 2619000; break; /* memory kHz */
    case 37: *v = 5120; break;    /* bus bits */
    default: *v = 0;
  }
  return 0;
}
int cuMemGetInfo_v2(size_t* free_bytes, size_t* total) { *free_bytes = (size_t)1 << 28; *total = (size_t)1 << 30; return 0; }
int cuMemAlloc_v2(unsigned long long* p, size_t size) { return 2; }
"""


@needs_cc
def test_topology_says_which_devices_reach_each_other(tmp_path):
    # Three devices; 0 and 1 reach each other, 2 reaches nobody (cuDeviceCanAccessPeer).
    special = ONE_DEVICE.replace("*n = 1; return 0;", "*n = 3; return 0;") + r"""
int cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return 0; }
int cuDeviceCanAccessPeer(int* can, int a, int b) { *can = a != 2 && b != 2; return 0; }
"""
    lib = fake_driver(tmp_path, "three", special)
    out, _ = run(f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
print(json.dumps({{d.name: [[l.peer, l.kind, l.peer_access] for l in d.links()] for d in hal.devices()}}))
""", {"HAL_CUDA_LIBRARY": str(lib)})
    assert out["cuda:0"] == [["host", "pcie", False], ["cuda:1", "pcie", True], ["cuda:2", "host_staged", False]]
    assert out["cuda:2"] == [["host", "pcie", False], ["cuda:0", "host_staged", False],
                             ["cuda:1", "host_staged", False]]


@needs_cc
def test_a_device_reports_its_attributes(tmp_path):
    lib = fake_driver(tmp_path, "one", ONE_DEVICE)
    out, _ = run(f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
d = hal.devices()[0]
p = d.properties
print(json.dumps({{"n": len(hal.devices()), "name": p.name, "vendor": p.vendor, "kind": p.kind, "memory": p.total_memory,
                  "f32": p.peak_flops.get("f32", 0.0), "bandwidth": p.memory_bandwidth, "emulated": p.emulated,
                  "host": p.host_addressable, "mappable": p.mappable}}))
""", {"HAL_CUDA_LIBRARY": str(lib)})
    assert out["n"] == 1
    assert (out["name"], out["vendor"], out["kind"], out["memory"]) == ("Fake H100", "NVIDIA", "gpu", 1 << 30)
    assert out["f32"] == pytest.approx(132 * 128 * 1.98e9 * 2)  # SMs x FP32 lanes (sm_90) x clock x FMA
    assert out["bandwidth"] == pytest.approx(2 * 2.619e9 * 640)  # DDR x memory clock x bus bytes
    assert not out["emulated"] and not out["host"] and not out["mappable"]


@needs_cc
def test_out_of_memory_is_translated_with_the_figures(tmp_path):
    lib = fake_driver(tmp_path, "oom", ONE_DEVICE)
    out, _ = run(f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
d = hal.devices()[0]
try:
    d.alloc(4096)
    print(json.dumps({{"raised": None}}))
except hal.OutOfMemory as e:
    print(json.dumps({{"raised": "OutOfMemory", "message": str(e)}}))
""", {"HAL_CUDA_LIBRARY": str(lib)})
    assert out["raised"] == "OutOfMemory"
    assert "cuda: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory" in out["message"]
    assert re.search(r"\d+ bytes requested on device 0 \(Fake H100\), 805306368 in use, capacity 1073741824",
                     out["message"]), out["message"]


@needs_cc
def test_the_device_contract_holds_on_a_fake_driver(tmp_path):
    """HAL's contract suite (hal conformance) against two fake devices backed by host memory (fake_libcuda.c): the
    plugin's plumbing (handles, copies with offsets, peer copies, fills, events and timing, pinned memory, out of
    memory) without a GPU. The fake runs queued work at once in the caller's thread, host functions included, so the
    test that holds a stream with a blocking host function cannot run on it (it needs a driver thread)."""
    lib = tmp_path / "libcuda_fake.so"
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-o", str(lib), str(Path(__file__).with_name("fake_libcuda.c"))],
                   check=True, timeout=60)
    env = {**os.environ, "HAL_CUDA_LIBRARY": str(lib), "PYTHONPATH": str(REPO)}
    env.pop("HAL_PLUGIN_PATH", None)
    code = (f"import sys; from hal import conformance; sys.exit(conformance.run({str(PLUGIN)!r}, "
            "pytest_args=['--timeout=60', '-rA', '-k', 'not missing_synchronize']))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=280,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.findall(r"^PASSED .*::(test_\w+)\[cuda:1", proc.stdout, re.M)
    for name in ("test_host_device_round_trip", "test_device_to_device_with_offsets", "test_peer_copy_to_every_other_device",
                 "test_fill", "test_event_timing", "test_out_of_memory_names_the_numbers"):
        assert name in passed, proc.stdout[-4000:]


@needs_cc
def test_mm_and_bmm_map_strided_views_onto_cublas(tmp_path):
    """op_launch of aten::mm / aten::bmm on the fake driver with a fake cuBLAS (fake_libcublas.c: the reference
    column-major SGEMM, which refuses leading dimensions BLAS forbids), driven from C (ops_check.c) over the layouts
    ATen hands over (transposed, sliced, a single row or column, k = 0, batch stride 0), each checked against a
    row-major product; layouts cuBLAS cannot read in place must be declined."""
    here = Path(__file__).parent
    driver, blas, check = tmp_path / "libcuda_fake.so", tmp_path / "libcublas_fake.so", tmp_path / "ops_check"
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-o", str(driver), str(here / "fake_libcuda.c")], check=True, timeout=60)
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-o", str(blas), str(here / "fake_libcublas.c")], check=True, timeout=60)
    subprocess.run([CC, "-std=c11", "-I", str(REPO / "csrc" / "include"), "-o", str(check), str(here / "ops_check.c"),
                    "-ldl", "-lm"], check=True, timeout=60)
    env = {**os.environ, "HAL_CUDA_LIBRARY": str(driver), "HAL_CUBLAS_LIBRARY": str(blas)}
    proc = subprocess.run([str(check), str(PLUGIN)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ALL ok 14 declined 2" in proc.stdout, proc.stdout


@needs_cc
def test_without_cublas_no_operator_is_declared(tmp_path):
    lib = tmp_path / "libcuda_fake.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(lib), str(Path(__file__).with_name("fake_libcuda.c"))],
                   check=True, timeout=60)
    out, err = run(f"""
import json, hal
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
print(json.dumps({{"ops": hal.devices()[0].operators()}}))
""", {"HAL_CUDA_LIBRARY": str(lib), "HAL_CUBLAS_LIBRARY": "/nonexistent/libcublas.so.12", "HAL_CUDA_DEBUG": "1"})
    assert out["ops"] == {}
    assert "/nonexistent/libcublas.so.12 not found: no operators" in err


COMM = f"""
import json, time, hal
from hal import _C
hal.init([{str(PLUGIN)!r}], use_package_plugins=False, use_env=False)
d = hal.devices()[0]
out = {{"supports": d.supports("comm_init_rank") and d.supports("allreduce")}}
if out["supports"]:
    uid = _C.comm_unique_id(d._native)
    out["id"] = len(uid)
    t = time.monotonic()
    try:
        comm = _C.Communicator(d._native, 2, uid, 0, timeout_ms=300)
        out["init"] = "ok"
        del comm
    except hal.Timeout as e:
        out["init"], out["message"] = "timeout", str(e)
    out["seconds"] = time.monotonic() - t
print(json.dumps(out))
"""


@needs_cc
def test_collectives_come_with_nccl_and_init_honours_the_timeout(tmp_path):
    here = Path(__file__).parent
    driver, nccl = tmp_path / "libcuda_fake.so", tmp_path / "libnccl_fake.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(driver), str(here / "fake_libcuda.c")], check=True, timeout=60)
    subprocess.run([CC, "-shared", "-fPIC", "-w", "-o", str(nccl), str(here / "fake_libnccl.c")], check=True, timeout=60)
    env = {"HAL_CUDA_LIBRARY": str(driver), "HAL_NCCL_LIBRARY": str(nccl)}
    # Without NCCL the collective entries are absent (collective.h: HAL bridges through the host).
    out, _ = run(COMM, {**env, "HAL_NCCL_LIBRARY": "/nonexistent/libnccl.so.2"})
    assert out == {"supports": False}
    # With it: an id of NCCL's 128 bytes, and a communicator.
    out, _ = run(COMM, env)
    assert out["supports"] and out["id"] == 128 and out["init"] == "ok", out
    # A peer that never joins: HAL_STATUS_TIMEOUT once the config's timeout passed, not when NCCL gives up.
    out, _ = run(COMM, {**env, "FAKE_NCCL_INIT_SLEEP_MS": "5000"})
    assert out["init"] == "timeout", out
    assert "did not join within 300 ms" in out["message"]
    assert 0.25 < out["seconds"] < 3.0
