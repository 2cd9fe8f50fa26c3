"""Two "hosts" as two network namespaces joined by a veth pair: the ranks see two hosts (the host key includes
the network namespace), the all-reduce crosses them over Gloo/TCP and stays right."""
from __future__ import annotations

import json

import pytest

from tests.collectives.launch import assert_all_ok, run_ranks
from tests.netns import veth_pair

pytestmark = pytest.mark.needs_native


@pytest.fixture
def two_hosts():
    """Namespaces with 10.231.0.1/.2 on a veth pair; removed afterwards."""
    with veth_pair("10.231.0", "hal") as pair:
        yield pair


def test_allreduce_across_two_hosts(two_hosts):
    names, links = two_hosts
    devices = ["hal:1", "hal:2", "hal:3", "hal:0"]
    side = [0, 0, 1, 1]
    results = run_ranks("hosts", devices, {"HAL_TEST_ADDR": "10.231.0.1"}, timeout=120,
                        prefix=[["ip", "netns", "exec", names[s]] for s in side],
                        rank_env=[{"GLOO_SOCKET_IFNAME": links[s]} for s in side])
    lines = assert_all_ok(results)
    reports = [json.loads(r.stdout.strip().splitlines()[-2]) for r in results]
    assert all(rep["hosts"] == 2 for rep in reports), reports
    assert lines[0].startswith("OK ")
    from hal import _C

    if hasattr(_C, "Communicator"):  # The emu pair on the first host is an island: the hierarchical path.
        assert reports[0]["islands"][0] == [0, 1] and reports[0]["hierarchical"], reports
        # Leaders on two hosts cannot share memory: they exchange over Gloo (TCP between the namespaces).
        assert reports[0]["leaders"] == "GlooLeaders", reports
