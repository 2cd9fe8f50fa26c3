"""The `hal` backend's ops against numpy float64 on each path: host-staged, one island's plugin communicator,
hierarchical across islands; failures."""
from __future__ import annotations

import json

import pytest

from tests.collectives.launch import assert_all_ok, run_ranks

pytestmark = pytest.mark.needs_native


def plugins_have_collectives() -> bool:
    from hal import _C

    return hasattr(_C, "Communicator")


@pytest.mark.parametrize("devices,env,path", [
    (["hal:0", "cpu", "hal:2"], {"HAL_COLLECTIVES": "host"}, "host"),
    (["hal:1", "hal:2", "hal:3"], {}, "island"),
    (["hal:1", "hal:4", "hal:0", "hal:3"], {"HAL_COLLECTIVES_CHUNK_BYTES": "65536"}, "hierarchical"),
    # Two cpu ranks join the leaders' shared-memory exchange with their own memory (no island step, no staging).
    (["hal:1", "hal:0", "hal:2", "hal:0"], {"HAL_COLLECTIVES_CHUNK_BYTES": "65536"}, "hierarchical"),
    (["hal:0", "hal:2"], {"HAL_TEST_BACKEND": "cpu:gloo,hal:hal"}, "host"),
], ids=["host-cpu-and-hal", "one-emu-island", "emu-island-and-cpu", "emu-and-cpu-islands", "cpu:gloo,hal:hal"])
def test_every_op_matches_numpy(devices, env, path):
    results = run_ranks("ops", devices, env)
    lines = assert_all_ok(results)
    assert all(line.startswith("OK ") and int(line.split()[1]) > 80 for line in lines), lines
    if path != "host" and plugins_have_collectives():
        layout = json.loads(results[0].stdout.strip().splitlines()[-2])
        assert layout["single" if path == "island" else "hierarchical"], layout
        if path == "hierarchical":  # Rank 0 leads the emu island; the leaders share this host's memory.
            assert layout["leaders"] == "SharedMemoryLeaders", layout


def test_async_works_overlap_and_keep_stream_order():
    assert_all_ok(run_ranks("async", ["hal:1", "hal:2", "hal:3"]))


def test_bad_arguments_raise_and_the_group_survives():
    assert_all_ok(run_ranks("errors", ["hal:0", "hal:1"]))


@pytest.mark.parametrize("scenario,op", [("kill", "allreduce"), ("hang", "broadcast")])
def test_a_dead_or_hung_rank_fails_the_others_within_the_timeout(scenario, op):
    results = run_ranks(scenario, ["hal:0", "hal:1", "hal:2"], {"HAL_TEST_TIMEOUT": "5"}, timeout=60)
    if scenario == "kill":
        assert results[2].returncode == -9
    for rank in (0, 1):
        r = results[rank]
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(r.stdout.strip().splitlines()[0])
        assert op in report["error"] and "op #" in report["error"] and "rank" in report["error"], report
        assert report["seconds"] < 5 + 5, report


@pytest.mark.parametrize("devices", [["hal:0", "hal:1"], ["hal:1", "hal:2"]], ids=["host", "island"])
def test_abort_fails_pending_works_and_destroy_stops_the_threads(devices):
    results = run_ranks("abort", devices, {"HAL_TEST_TIMEOUT": "10"}, timeout=60)
    assert_all_ok(results)
    assert results[0].stdout.strip().endswith("aborted")
