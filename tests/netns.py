"""Two network namespaces joined by a veth pair, for tests of several "hosts" on one machine."""
from __future__ import annotations

import contextlib
import subprocess
import uuid

import pytest


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@contextlib.contextmanager
def veth_pair(subnet: str, prefix: str):
    """Yields ([namespace a, namespace b], [link a, link b]) with `subnet`.1 and .2/24 on the pair (unique
    names from `prefix`); skips the test, saying why, where namespaces cannot be made; removes them after."""
    tag = uuid.uuid4().hex[:6]
    names = [f"{prefix}{tag}a", f"{prefix}{tag}b"]
    links = [f"v{prefix[-1]}{tag}a", f"v{prefix[-1]}{tag}b"]
    try:
        made = ip("netns", "add", names[0])
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run `ip netns` here: {e}")
    if made.returncode != 0:
        pytest.skip(f"creating a network namespace is not permitted here: {made.stderr.strip()}")
    try:
        steps = [("netns", "add", names[1]), ("link", "add", links[0], "type", "veth", "peer", "name", links[1]),
                 ("link", "set", links[0], "netns", names[0]), ("link", "set", links[1], "netns", names[1])]
        for i, ns in enumerate(names):
            steps += [("-n", ns, "addr", "add", f"{subnet}.{i + 1}/24", "dev", links[i]),
                      ("-n", ns, "link", "set", links[i], "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            r = ip(*step)
            if r.returncode != 0:
                pytest.skip(f"`ip {' '.join(step)}` failed: {r.stderr.strip()}")
        yield names, links
    finally:
        for ns in names:
            ip("netns", "del", ns)
