"""Topology in the cluster file: NICs shared by a node's devices and per-pair paths between nodes, each
against the closed form of the send and of the ring all-reduce over its bottleneck hop."""
from __future__ import annotations

import pytest

from hal.plan.cluster import GB, US, ClusterError, Link, parse_cluster
from hal.plan.cost import CostModel, ring_allreduce
from hal.plan.model import LayerSpec, ModelSpec
from hal.plan.plan import Pipeline, Plan, Stage
from hal.plan.planner import plan

MODEL = ModelSpec("m", [LayerSpec(f"l{i}", "block", 10 ** 6, 1e12, 1e6, 1e8) for i in range(4)], 1)


def test_devices_sharing_a_nic_divide_its_bandwidth():
    c = parse_cluster("name: nics\nnodes:\n  - {kind: H100, devices: 8, replicas: 2, "
                      "nics: {count: 2, bandwidth_gb_s: 50, latency_us: 5}}\n"
                      "  - {kind: H100, devices: 3, nics: {count: 2, bandwidth_gb_s: 50}}\n")
    assert c.nodes[0].inter == Link(50 * GB / 4, 5 * US)   # 4 devices per NIC
    assert c.nodes[2].inter == Link(50 * GB / 2, 0.0)      # 3 devices on 2 NICs: 2 share one
    # 16 one-device pipelines over the two 8-device nodes: a ring in each node, then one across the nodes over
    # the shared NIC's share, of 1/8 of the gradient each.
    cm = CostModel(c, MODEL)
    pipes = [Pipeline([Stage("H100", [d], (0, 4))], 1, 1, 1) for d in range(16)]
    est = cm.evaluate(Plan("m", 16, 1, pipes, "nics"))
    grad = 4 * 10 ** 6 * 2
    assert est.allreduce_time == pytest.approx(ring_allreduce(8, grad, c.nodes[0].intra)
                                               + ring_allreduce(2, grad / 8, Link(12.5 * GB, 5 * US)))


THREE = """name: pairs
links:
  inter_node: {bandwidth_gb_s: 25, latency_us: 10}
  pairs:
    - {between: [a, b], bandwidth_gb_s: 1, latency_us: 30}
nodes:
  - {name: a, kind: H100, devices: 1}
  - {name: b, kind: H100, devices: 1}
  - {name: c, kind: H100, devices: 1}
"""


def test_a_pair_link_is_the_path_of_the_sends_and_the_bottleneck_of_the_ring():
    c = parse_cluster(THREE)
    cm = CostModel(c, MODEL)
    slow, default = Link(1 * GB, 30 * US), Link(25 * GB, 10 * US)
    assert cm.link_between(0, 1) == slow and cm.link_between(1, 2) == default
    # A pipeline a -> b -> c: the first send over the pair's path, the second over the inter-node links.
    pipe = Pipeline([Stage("H100", [0], (0, 2)), Stage("H100", [1], (2, 3)), Stage("H100", [2], (3, 4))], 1, 1, 1)
    stages = cm.stage_costs(pipe)
    assert stages[0].send_fwd == pytest.approx(30e-6 + 1e8 / 1e9)
    assert stages[1].send_fwd == pytest.approx(10e-6 + 1e8 / 25e9)
    # Three one-device pipelines: one ring a -> b -> c -> a, paced by its slowest hop (a - b).
    pipes = [Pipeline([Stage("H100", [d], (0, 4))], 1, 1, 1) for d in range(3)]
    est = cm.evaluate(Plan("m", 3, 1, pipes, "pairs"))
    assert est.allreduce_time == pytest.approx(ring_allreduce(3, 4 * 10 ** 6 * 2, slow))
    # b and c alone do not cross the slow pair.
    est = cm.evaluate(Plan("m", 2, 1, pipes[1:], "pairs"))
    assert est.allreduce_time == pytest.approx(ring_allreduce(2, 4 * 10 ** 6 * 2, default))
    # Paired nodes are device classes of their own; the planner plans and every plan it returns fits.
    assert len(c.device_classes()) == 3
    r = plan(c, MODEL, 8)
    assert r.estimate.fits and r.estimate.step_time == pytest.approx(cm.evaluate(r.plan).step_time)


def test_old_cluster_files_keep_their_links():
    c = parse_cluster("name: old\nlinks:\n  inter_node: {bandwidth_gb_s: 40, latency_us: 3}\n"
                      "nodes:\n  - {kind: H100, devices: 8, replicas: 2}\n")
    assert c.pairs == {} and all(n.inter == Link(40 * GB, 3 * US) for n in c.nodes)
    assert len(c.device_classes()) == 1


@pytest.mark.parametrize("text,where,words", [
    ("nodes:\n  - {kind: H100, devices: 2, inter_node: {bandwidth_gb_s: 5}, nics: {count: 1, bandwidth_gb_s: 5}}\n",
     ":2: nodes[0].nics", "not both"),
    ("nodes:\n  - {kind: H100, devices: 2, nics: {count: 0, bandwidth_gb_s: 5}}\n", ":2: nodes[0].nics.count", ""),
    ("nodes:\n  - {kind: H100, devices: 2, nics: {count: 1}}\n", "nodes[0].nics.bandwidth_gb_s", "missing"),
    ("links:\n  pairs:\n    - {between: [a, zz], bandwidth_gb_s: 1}\nnodes:\n  - {name: a, kind: H100, devices: 1}\n",
     ":3: links.pairs[0].between", "unknown node 'zz'"),
    ("links:\n  pairs:\n    - {between: [a, a], bandwidth_gb_s: 1}\nnodes:\n  - {name: a, kind: H100, devices: 1}\n",
     ":3: links.pairs[0].between", "itself"),
    ("links:\n  pairs:\n    - {between: [a], bandwidth_gb_s: 1}\nnodes:\n  - {name: a, kind: H100, devices: 1}\n",
     ":3: links.pairs[0].between", "two node names"),
    ("links:\n  pairs:\n    - {between: [a, b], bandwidth_gb_s: 1}\n    - {between: [b, a], bandwidth_gb_s: 2}\n"
     "nodes:\n  - {name: a, kind: H100, devices: 1}\n  - {name: b, kind: H100, devices: 1}\n",
     ":4: links.pairs[1].between", "twice"),
    ("links:\n  pairs:\n    - {between: [a, b]}\nnodes:\n  - {name: a, kind: H100, devices: 1}\n"
     "  - {name: b, kind: H100, devices: 1}\n", "links.pairs[0].bandwidth_gb_s", "missing"),
    ("links:\n  pairs: 3\nnodes:\n  - {name: a, kind: H100, devices: 1}\n", ":2: links.pairs", "list"),
])
def test_bad_topology_names_file_line_and_field(text, where, words):
    with pytest.raises(ClusterError) as e:
        parse_cluster(text, "c.yaml")
    assert str(e.value).startswith("c.yaml") and where in str(e.value) and words in str(e.value), str(e.value)
