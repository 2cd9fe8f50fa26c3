"""`hal conformance` against faulty variants of a plugin (faulty_plugin.c: the emu plugin with one fault put
in, chosen by $HAL_FAULT): each must fail, in its own area, with a reason that names the fault; the variant
without a fault passes every area. The runtime-driven suite (suite.py) failed only 15 of 24 such faults."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hal.conformance import abi

REPO = Path(__file__).resolve().parents[2]
EMU = REPO / "hal" / "plugins" / "libhal_plugin_emu.so"
CONFIG = "npu:2:mem=256MiB"

# fault -> (the area that must fail, words of the failing test's reason)
FAULTS = {
    "abi_major": ("loading", "ABI major 2"),
    "shutdown_hangs": ("loading", "timed out after 3 s in shutdown"),
    "missing_entry": ("loading", "stream_query"),
    "free_leaks": ("memory", "leaks"),
    "memory_info_frozen": ("memory", "does not follow allocations"),
    "unaligned": ("memory", "not aligned to 256"),
    "properties_ignore_struct_size": ("properties", "ignores struct_size"),
    "d2d_ignores_offsets": ("copies", "d2d"),
    "synchronize_ignores_running": ("streams", "stream_synchronize returned"),
    "destroy_does_not_wait": ("streams", "stream_destroy returned before"),
    "stream_query_done": ("streams", "stream_query while a host function holds it"),
    "elapsed_microseconds": ("events", "not milliseconds"),
    "elapsed_seconds": ("events", "not milliseconds"),
    "event_query_lies": ("events", "event_query of an event behind held work"),
    "wait_event_ignored": ("events", "waiting on an event"),
    "event_never_completes": ("events", "timed out after 3 s in event_synchronize"),
    "sticky_swallowed": ("errors", "never reported by stream_synchronize"),
    "sticky_never_cleared": ("errors", "once the failure was reported"),
    "last_error_stale": ("errors", "get_last_error after a successful"),
    "last_error_garbage": ("errors", "get_last_error returned"),
    "invalid_arguments_accepted": ("errors", "INVALID_ARGUMENT"),
    "pinned_aliases": ("pinned", "buffers overlap"),
    # Two threads' allocations cross: caught as a wrong result, or as the worker crashing on it.
    "racy_allocate": ("threading", ("thread", "the test process died")),
    "op_launch_wrong_alpha": ("kernels", "add.Tensor(a, b, alpha=2)"),
    "allreduce_local_only": ("collectives", "allreduce sum"),
}


@pytest.fixture(scope="session")
def faulty(tmp_path_factory) -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not EMU.exists():
        pytest.skip("needs a C compiler and the built emu plugin (hal/plugins/libhal_plugin_emu.so)")
    out = tmp_path_factory.mktemp("faulty") / "libhal_plugin_faulty.so"
    subprocess.run([compiler, "-std=c11", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", f"-I{REPO / 'csrc' / 'include'}",
                    f'-DHAL_REAL_PLUGIN="{EMU}"', str(Path(__file__).with_name("faulty_plugin.c")), "-o", str(out),
                    "-ldl", "-lpthread"], check=True)
    return out


def conformance(plugin: Path, monkeypatch, fault: str, **kwargs) -> dict:
    monkeypatch.setenv("HAL_FAULT", fault)
    monkeypatch.setenv("HAL_CONFORMANCE_QUIET", "1")
    return abi.run(plugin, config=CONFIG, out=io.StringIO(), **kwargs)


def test_without_a_fault_every_area_passes(faulty, monkeypatch):
    report = conformance(faulty, monkeypatch, "none", timeout=20)
    assert report["passed"], report["failed_areas"]
    assert all(a["status"] == "pass" for a in report["areas"].values()), \
        {n: a["status"] for n, a in report["areas"].items()}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_fails_in_its_area(faulty, monkeypatch, fault):
    area, words = FAULTS[fault]
    hangs = fault in ("event_never_completes", "shutdown_hangs")  # A hung test waits out its timeout.
    report = conformance(faulty, monkeypatch, fault, timeout=3 if hangs else 10, areas=[area])
    assert not report["passed"] and area in report["failed_areas"], (fault, report["failed_areas"])
    reasons = [t["reason"] for t in report["areas"][area]["tests"] if t["status"] == "fail"]
    assert any(w in r for r in reasons for w in ((words,) if isinstance(words, str) else words)), (fault, reasons)
    if area != "loading":
        assert report["areas"]["loading"]["status"] == "pass", report["areas"]["loading"]


def test_without_host_functions_synchronize_and_destroy_are_still_checked(faulty, monkeypatch):
    """launch_host_func is optional: streams fall back to large copies as their known work."""
    report = conformance(faulty, monkeypatch, "no_host_func", timeout=20, areas=["streams"])
    tests = {t["name"]: t["status"] for t in report["areas"]["streams"]["tests"]}
    assert tests["synchronize_waits_for_running_work"] == tests["destroy_waits_for_queued_work"] == "pass", tests
    for fault, words in [("synchronize_ignores_running", "stream_synchronize returned before the copies"),
                         ("destroy_does_not_wait", "stream_destroy returned before the copies")]:
        report = conformance(faulty, monkeypatch, f"no_host_func,{fault}", timeout=20, areas=["streams"])
        reasons = [t["reason"] for t in report["areas"]["streams"]["tests"] if t["status"] == "fail"]
        assert any(w in r for r in reasons for w in ((words,) if isinstance(words, str) else words)), (fault, reasons)


def test_every_fault_of_the_c_file_is_tested():
    import re

    source = Path(__file__).with_name("faulty_plugin.c").read_text()
    assert set(re.findall(r'fault\("([a-z_0-9]+)"\)', source)) == set(FAULTS) | {"no_host_func"}
