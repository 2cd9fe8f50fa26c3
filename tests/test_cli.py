"""The `hal` command and the null plugin's answers, each in a fresh process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import NULL_PLUGIN, PLUGIN_DIR, run_python, run_python_json

pytestmark = pytest.mark.needs_native


def hal_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_python(f"import sys; from hal.cli import main; sys.exit(main({list(args)!r}))", env=env)


def test_devices_json_lists_cpu_and_emulated_devices():
    proc = hal_cli("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    devices = json.loads(proc.stdout)["devices"]
    names = [d["name"] for d in devices]
    assert names[0] == "cpu:0" and sum(n.startswith("emu:") for n in names) >= 2
    for d in devices:
        assert d["emulated"] == d["name"].startswith("emu:")
        assert d["memory_total"] > 0 and 0 <= d["memory_used"] <= d["memory_total"]


def test_devices_table_labels_emulated_devices():
    proc = hal_cli("devices")
    assert proc.returncode == 0, proc.stderr
    emu_lines = [line for line in proc.stdout.splitlines() if "emu:" in line]
    assert len(emu_lines) >= 2 and all("emulated" in line for line in emu_lines)
    assert "cpu:0" in proc.stdout


def test_visible_devices_filter():
    proc = hal_cli("devices", "--json", env={"HAL_VISIBLE_DEVICES": "emu:1,cpu:0"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(d["name"] for d in json.loads(proc.stdout)["devices"]) == ["cpu:0", "emu:1"]


def test_info_lists_entries():
    proc = hal_cli("info", str(PLUGIN_DIR / "libhal_plugin_emu.so"), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == "emu" and info["abi"] == "1.2" and info["error"] is None
    assert info["entries"]["memory_allocate"] and info["entries"]["memory_map"]
    assert info["entries"]["allreduce"] and info["entries"]["recv"]  # The shared-memory collectives.
    assert info["entries"]["op_list"] and info["entries"]["op_launch"]  # Its own kernels (emu_ops.c).
    assert not info["entries"]["program_create"]


def test_info_on_a_file_that_is_not_a_plugin(tmp_path):
    bogus = tmp_path / "libhal_plugin_bogus.so"
    bogus.write_text("not a shared library")
    proc = hal_cli("info", str(bogus))
    assert proc.returncode == 1
    assert str(bogus) in proc.stdout + proc.stderr


def test_null_plugin_answers_unimplemented():
    out = run_python_json(f"""
        import json, hal
        hal.init([{str(NULL_PLUGIN)!r}], use_package_plugins=False, use_env=False)
        d = hal.device("null:0")
        try:
            d.alloc(16)
            answer = "allocated"
        except hal.Unimplemented as e:
            answer = str(e)
        print(json.dumps({{"names": [x.name for x in hal.devices()], "answer": answer}}))
    """)
    assert out["names"] == ["null:0"]
    assert "not implemented" in out["answer"] and "null" in out["answer"]


def test_hal_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "hal.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "devices" in proc.stdout


def test_conformance_passes_on_emu(tmp_path):
    report = tmp_path / "emu.json"
    proc = hal_cli("conformance", str(PLUGIN_DIR / "libhal_plugin_emu.so"), "--config", "npu:2:mem=128MiB",
                   "--report", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "emu: conformant" in proc.stdout
    data = json.loads(report.read_text())
    assert data["passed"] and data["abi"] == "1.2" and data["areas"]["collectives"]["status"] == "pass"
    assert all(t["status"] == "pass" for t in data["areas"]["streams"]["tests"])


def test_conformance_through_the_runtime_too():
    proc = hal_cli("conformance", str(PLUGIN_DIR / "libhal_plugin_cpu.so"), "--area", "copies", "--runtime",
                   "-k", "fill or peer")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu: conformant" in proc.stdout and "Through HAL's runtime" in proc.stdout and " passed" in proc.stdout


def test_conformance_fails_on_the_null_skeleton_naming_the_entries():
    proc = hal_cli("conformance", str(NULL_PLUGIN), "--area", "streams")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stream_create is not implemented" in proc.stdout and "NOT conformant: streams" in proc.stdout


def test_conformance_expected_failures_cannot_go_stale(tmp_path):
    cpu = str(PLUGIN_DIR / "libhal_plugin_cpu.so")
    passing = tmp_path / "passing.yaml"
    passing.write_text('test_memset: "listed, but it passes"\n')
    proc = hal_cli("conformance", cpu, "--expected-failures", str(passing), "--area", "copies")
    assert proc.returncode == 1 and "XPASS copies.memset" in proc.stdout, proc.stdout
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text('test_no_such_thing: "a reason"\n')
    proc = hal_cli("conformance", cpu, "--expected-failures", str(unknown), "--area", "copies")
    assert proc.returncode != 0 and "test_no_such_thing" in proc.stdout + proc.stderr
    failing = tmp_path / "null.yaml"
    failing.write_text("".join(f'streams.{n}: "no streams yet"\n' for n in (
        "in_order", "query_sees_pending_work", "synchronize_waits_for_running_work",
        "destroy_waits_for_queued_work", "many_streams")))
    proc = hal_cli("conformance", str(NULL_PLUGIN), "--expected-failures", str(failing), "--area", "streams")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_conformance_reports_a_plugin_without_devices():
    cuda = PLUGIN_DIR / "libhal_plugin_cuda.so"
    if not cuda.exists():
        pytest.skip("the cuda plugin is not built")
    proc = hal_cli("conformance", str(cuda), "--area", "memory")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no device: device_count is 0" in proc.stdout and "not tested beyond loading" in proc.stdout


def test_plan_subcommand_answers_for_a_preset_cluster(tmp_path):
    out = tmp_path / "plan.json"
    proc = hal_cli("plan", "--cluster", "small-8", "--model", "tiny", "--global-batch", "16", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "predicted step time" in proc.stdout and out.exists()


def test_ops_reports_core_aten_coverage_of_a_plugin():
    proc = hal_cli("ops", str(PLUGIN_DIR / "libhal_plugin_emu.so"), "--config", "npu:1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (dev,) = report["devices"]
    assert report["name"] == "emu" and dev["device"] == "emu:0"
    assert dev["native_core"]["aten::mm"] == ["f32", "f64"] and "aten::fill_.Scalar" in dev["native_other"]
    # Views, factories and size queries need no kernel: HAL runs them itself, out of the plugin's count.
    assert "aten::view" in dev["by_hal"] and "aten::view" not in dev["missing_core"]
    assert "aten::addmm" in dev["missing_core"]
    assert dev["core_total"] == len(dev["native_core"]) + len(dev["missing_core"]) > 150
    text = hal_cli("ops", str(PLUGIN_DIR / "libhal_plugin_emu.so"), "--config", "npu:1")
    assert text.returncode == 0 and "core ATen operators run natively" in text.stdout


def test_ops_on_a_plugin_without_kernels():
    proc = hal_cli("ops", str(PLUGIN_DIR / "libhal_plugin_cpu.so"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["devices"][0]["native_core"] == {}
