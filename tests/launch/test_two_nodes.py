"""Two `hal launch` nodes in two network namespaces over a veth pair (like tests/collectives/test_two_hosts.py):
one rendezvous at node 0's address, one Gloo all-reduce across both nodes, one device kind on each."""
from __future__ import annotations

import json
import random
import subprocess
import threading

import pytest

from tests.launch.helpers import launch, reports, write_worker
from tests.netns import veth_pair

pytestmark = [pytest.mark.needs_native, pytest.mark.timeout(150)]


@pytest.fixture
def two_hosts():
    """Namespaces with 10.232.0.1/.2 on a veth pair; removed afterwards."""
    with veth_pair("10.232.0", "hl") as pair:
        yield pair


def run_two_nodes(tmp_path, two_hosts, args: list[str], timeout: float) -> None:
    """`hal launch --nnodes 2 ... ARGS` in each namespace (node 0 with an emu-fast device, node 1 with an
    emu-slow one), at the same time; asserts both exit 0."""
    names, links = two_hosts
    endpoint = f"10.232.0.1:{random.randint(20000, 30000)}"
    emus = ["emu-fast:1:speed=0.5", "emu-slow:1:speed=0.25"]
    results: list = [None, None]

    def node(i: int) -> None:
        try:
            results[i] = launch(tmp_path, ["--nnodes", "2", "--node-rank", str(i), "--rdzv-endpoint", endpoint,
                                           "--rdzv-conf", "join_timeout=40", "--max-restarts", "0",
                                           "--run-dir", f"run{i}", *args],
                                emu=emus[i], env={"GLOO_SOCKET_IFNAME": links[i]}, timeout=timeout,
                                prefix=["ip", "netns", "exec", names[i]])
        except BaseException as e:  # noqa: BLE001 — reported below
            results[i] = e

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 20)
    for i, r in enumerate(results):
        assert isinstance(r, subprocess.CompletedProcess) and r.returncode == 0, f"node {i}: {r}\n" + (
            r.stderr[-6000:] if isinstance(r, subprocess.CompletedProcess) else "")


WORKER = """
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank())])
dist.all_reduce(t)
out = {"world": dist.get_world_size(), "rank": dist.get_rank(), "kind": rep["devices"][0][2], "sum": t.item(),
       "node": os.environ["HAL_LAUNCH_NODE_RANK"]}
with open(os.path.join(os.environ["REPORT_DIR"], f"ar-{dist.get_rank()}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def test_two_nodes_one_allreduce(tmp_path, two_hosts):
    write_worker(tmp_path / "job.py", WORKER)
    run_two_nodes(tmp_path, two_hosts, ["job.py"], timeout=90)
    out = sorted((json.loads(p.read_text()) for p in (tmp_path / "reports").glob("ar-*.json")),
                 key=lambda x: x["rank"])
    assert [x["world"] for x in out] == [2, 2] and [x["sum"] for x in out] == [1.0, 1.0], out
    assert sorted(x["kind"] for x in out) == ["emu-fast", "emu-slow"]
    assert {x["node"]: x["kind"] for x in out} == {"0": "emu-fast", "1": "emu-slow"}
    envs = reports(tmp_path)
    assert sorted(e["HAL_LAUNCH_NNODES"] for e in envs) == ["2", "2"]
    # Elastic's rendezvous rank 0 (either node) hosts the workers' store, at its address on the veth pair.
    assert len({e["MASTER_ADDR"] for e in envs}) == 1 and envs[0]["MASTER_ADDR"] in ("10.232.0.1", "10.232.0.2")
    assert json.loads((tmp_path / "run0" / "launch.json").read_text())["rounds"][0]["world_size"] == 2
    assert json.loads((tmp_path / "run1" / "launch.node1.json").read_text())["state"] == "succeeded"


def test_the_training_job_across_two_nodes_of_two_kinds(tmp_path, two_hosts):
    """The demo's job (tiny GPT) on two nodes, one device kind each: planned for both, gradients summed across
    the namespaces, the loss falling."""
    job = ["-m", "hal.train.job", "--model", "tiny", "--batch", "8", "--micro-batch", "2", "--steps", "6",
           "--checkpoint-every", "0", "--profile-repeats", "1", "--live", "off"]
    run_two_nodes(tmp_path, two_hosts, job, timeout=120)
    found = [p for p in (tmp_path / "run0" / "result.json", tmp_path / "run1" / "result.json") if p.exists()]
    assert len(found) == 1, found  # rank 0's node writes it
    result = json.loads(found[0].read_text())
    assert result["kinds"] == ["emu-fast", "emu-slow"] and len(result["devices"]) == 2, result["devices"]
    assert {r["kind"] for r in result["ranks"]} == {"emu-fast", "emu-slow"}
    assert result["loss_last"] < result["loss_first"]
