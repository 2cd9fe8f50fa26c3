"""`hal conformance` on the bundled plugins: cpu, emu and opencl (when pocl or a driver gives it a device) pass
every area they can run; cuda without a driver loads and says it has no device; the null skeleton fails its
device areas, naming the entries it does not implement."""
from __future__ import annotations

import io

import pytest

from hal.conformance import abi
from tests.conftest import NULL_PLUGIN, PLUGIN_DIR

pytestmark = pytest.mark.needs_native


def conformance(name_or_path, config=None, **kwargs) -> dict:
    path = PLUGIN_DIR / f"libhal_plugin_{name_or_path}.so" if isinstance(name_or_path, str) else name_or_path
    if not path.exists():
        pytest.skip(f"{path.name} is not built")
    return abi.run(path, config=config, out=io.StringIO(), timeout=60, **kwargs)


@pytest.mark.parametrize("name, config", [("cpu", "mem=512MiB"), ("emu", None), ("opencl", None)])
def test_bundled_plugin_is_conformant(name, config, monkeypatch):
    monkeypatch.setenv("HAL_CONFORMANCE_QUIET", "1")
    report = conformance(name, config)
    if report["untested"]:
        pytest.skip(f"{name} has no device here")
    failed = {n: [t for t in a["tests"] if t["status"] == "fail"] for n, a in report["areas"].items()}
    assert report["passed"], {n: t for n, t in failed.items() if t}
    for area in ("loading", "properties", "memory", "copies", "streams", "events", "errors", "threading"):
        assert report["areas"][area]["status"] == "pass", (area, report["areas"][area])


def test_cuda_without_a_driver_loads_and_has_no_device(monkeypatch):
    monkeypatch.setenv("HAL_CONFORMANCE_QUIET", "1")
    report = conformance("cuda", areas=["memory", "streams"])
    if not report["untested"]:
        pytest.skip("the cuda plugin has a device here")
    assert report["passed"] and report["areas"]["loading"]["status"] == "pass"
    assert all(t["reason"] == "no device: device_count is 0" for t in report["areas"]["memory"]["tests"])


def test_null_skeleton_fails_naming_what_it_lacks(monkeypatch):
    monkeypatch.setenv("HAL_CONFORMANCE_QUIET", "1")
    report = conformance(NULL_PLUGIN, areas=["memory", "streams"])
    assert not report["passed"] and report["failed_areas"] == ["memory", "streams"]
    assert report["areas"]["loading"]["status"] == "pass"
    reasons = [t["reason"] for t in report["areas"]["streams"]["tests"]]
    assert all("is not implemented" in r for r in reasons), reasons
