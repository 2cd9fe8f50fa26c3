"""The `hal` backend's ops against numpy float64, on the host-staged path and on the default one."""
from __future__ import annotations

import json

import pytest

from tests.collectives.launch import assert_all_ok, run_ranks

pytestmark = pytest.mark.needs_native


@pytest.mark.parametrize("devices,env", [
    (["hal:0", "cpu", "hal:2"], {"HAL_COLLECTIVES": "host"}),
    (["hal:1", "hal:4", "hal:0", "hal:3"], {}),
    (["hal:0", "hal:2"], {"HAL_TEST_BACKEND": "cpu:gloo,hal:hal"}),
], ids=["host-3-ranks", "auto-4-ranks", "cpu:gloo,hal:hal"])
def test_every_op_matches_numpy(devices, env):
    lines = assert_all_ok(run_ranks("ops", devices, env))
    assert all(line.startswith("OK ") and int(line.split()[1]) > 80 for line in lines), lines


def test_async_works_overlap_and_keep_stream_order():
    assert_all_ok(run_ranks("async", ["hal:1", "hal:2"]))


def test_bad_arguments_raise_and_the_group_survives():
    assert_all_ok(run_ranks("errors", ["hal:0", "hal:1"]))


@pytest.mark.parametrize("scenario,op", [("kill", "allreduce"), ("hang", "broadcast")])
def test_a_dead_or_hung_rank_fails_the_others_within_the_timeout(scenario, op):
    results = run_ranks(scenario, ["hal:0", "hal:1", "hal:2"], {"HAL_TEST_TIMEOUT": "8"}, timeout=60)
    if scenario == "kill":
        assert results[2].returncode == -9
    for rank in (0, 1):
        r = results[rank]
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(r.stdout.strip().splitlines()[0])
        assert op in report["error"] and "op #" in report["error"] and "rank" in report["error"], report
        assert report["seconds"] < 8 + 5, report


def test_abort_fails_pending_works_and_destroy_stops_the_threads():
    results = run_ranks("abort", ["hal:0", "hal:1"], {"HAL_TEST_TIMEOUT": "10"}, timeout=60)
    assert_all_ok(results)
    assert results[0].stdout.strip().endswith("aborted")
