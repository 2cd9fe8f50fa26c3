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


def test_sums_are_bit_identical_across_device_mixes():
    a = digests(["hal:0", "hal:1", "hal:2"], {})
    b = digests(["hal:3", "hal:0", "hal:4"], {"HAL_COLLECTIVES_CHUNK_BYTES": "4096"})
    assert len({d["digest"] for d in a}) == 1, "ranks of one run disagree on an all-reduce"
    assert a == b, "another device mix gave other bits"
