"""HAL_DETERMINISTIC_REDUCE=1: the same inputs give the same result bits on any device mix and chunking."""
from __future__ import annotations

import json

import pytest

from tests.collectives.launch import assert_all_ok, run_ranks

pytestmark = pytest.mark.needs_native


def digests(devices, env):
    results = run_ranks("deterministic", devices, {"HAL_DETERMINISTIC_REDUCE": "1", **env})
    assert_all_ok(results)
    return [json.loads(r.stdout.strip().splitlines()[-2]) for r in results]


MIXES = (["hal:0", "hal:1", "hal:2"], ["hal:3", "hal:0", "hal:4"])  # cpu + an emu island, then the other way


def test_sums_are_bit_identical_across_device_mixes():
    a = digests(MIXES[0], {})
    b = digests(MIXES[1], {"HAL_COLLECTIVES_CHUNK_BYTES": "4096"})
    assert len({d["digest"] for d in a}) == 1, "ranks of one run disagree on an all-reduce"
    assert a == b, "another device mix gave other bits"


def test_without_the_mode_the_mixes_differ():
    """What the mode is for (and proof the test above can fail): the hierarchical sum's order follows the
    islands, so another device mix rounds differently."""
    from hal import _C

    if not hasattr(_C, "Communicator"):
        pytest.skip("this build's plugins have no collectives: every mix takes the same host path")
    a = run_ranks("deterministic", MIXES[0], {"HAL_DETERMINISTIC_REDUCE": "0"})
    b = run_ranks("deterministic", MIXES[1], {"HAL_DETERMINISTIC_REDUCE": "0"})
    assert_all_ok(a + b)
    assert json.loads(a[0].stdout.strip().splitlines()[-2])["digest"] != \
        json.loads(b[0].stdout.strip().splitlines()[-2])["digest"]
