"""Two "hosts" as two network namespaces joined by a veth pair: the ranks see two hosts (the host key includes
the network namespace), the all-reduce crosses them over Gloo/TCP and stays right."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.collectives.launch import assert_all_ok, run_ranks

pytestmark = pytest.mark.needs_native


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def two_hosts():
    """Namespaces halA/halB (unique names) with 10.231.0.1/.2 on a veth pair; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    names = [f"hal{tag}a", f"hal{tag}b"]
    try:
        made = ip("netns", "add", names[0])
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run `ip netns` here: {e}")
    if made.returncode != 0:
        pytest.skip(f"creating a network namespace is not permitted here: {made.stderr.strip()}")
    try:
        steps = [("netns", "add", names[1]),
                 ("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b"),
                 ("link", "set", f"v{tag}a", "netns", names[0]), ("link", "set", f"v{tag}b", "netns", names[1])]
        for i, ns in enumerate(names):
            dev = f"v{tag}{'ab'[i]}"
            steps += [("-n", ns, "addr", "add", f"10.231.0.{i + 1}/24", "dev", dev),
                      ("-n", ns, "link", "set", dev, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            r = ip(*step)
            if r.returncode != 0:
                pytest.skip(f"`ip {' '.join(step)}` failed: {r.stderr.strip()}")
        yield names, [f"v{tag}a", f"v{tag}b"]
    finally:
        for ns in names:
            ip("netns", "del", ns)


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
