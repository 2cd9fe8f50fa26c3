"""Cluster files and presets: loading, and errors that name file, line and field."""
from __future__ import annotations

import pytest

from hal.plan.cluster import GB, ClusterError, load_cluster, load_presets, parse_cluster

PRESET_NAMES = {"H100", "A100", "H20", "L40S", "MI300X", "Ascend910B", "Gaudi2", "Gaudi3", "MLU370"}


def test_presets_load_and_are_marked_as_priors():
    presets = load_presets()
    assert PRESET_NAMES <= set(presets)
    for k in presets.values():
        assert k.source == "datasheet"
        assert k.confidence in ("low", "medium", "high")
        assert k.peak_flops > 0 and k.memory_bytes > 0 and 0 < k.efficiency <= 1
    assert presets["H100"].peak_flops == pytest.approx(989e12)
    assert presets["Ascend910B"].confidence == "low"


def test_preset_clusters_load():
    c = load_cluster("mixed-256")
    assert c.num_devices == 256
    assert [(x.kind, x.count) for x in c.device_classes()] == [("H100", 64), ("Ascend910B", 128), ("MI300X", 64)]
    assert load_cluster("small-8").num_devices == 8
    assert load_cluster("large-1024").num_devices == 1024


def test_defaults_and_overrides():
    c = parse_cluster("""
name: t
kinds:
  - {name: fast-h100, base: H100, efficiency: 0.6, source: measured, confidence: high}
links:
  inter_node: {bandwidth_gb_s: 10, latency_us: 3}
nodes:
  - {kind: fast-h100, devices: 4, replicas: 2, intra_node: {bandwidth_gb_s: 300}}
  - {kind: L40S, devices: 2}
""")
    assert c.num_devices == 10
    assert c.kinds["fast-h100"].efficiency == 0.6 and c.kinds["fast-h100"].peak_flops == 989e12
    assert c.nodes[0].intra.bandwidth == 300 * GB and c.nodes[0].inter.bandwidth == 10 * GB
    assert c.nodes[2].intra.bandwidth == c.kinds["L40S"].chip_link.bandwidth / 2
    assert c.node_of(9).kind == "L40S" and c.node_of(4).name == "fast-h100-0.1"


@pytest.mark.parametrize("text, line, field, words", [
    ("name: x\nnodes:\n  - {kind: H100, devices: 8}\n  - {kind: H900, devices: 8}\n", 4, "nodes[1].kind",
     "unknown kind"),
    ("nodes:\n  - kind: H100\n    devices: -2\n", 3, "nodes[0].devices", "must be > 0"),
    ("nodes:\n  - kind: H100\n    devices: eight\n", 3, "nodes[0].devices", "expected int"),
    ("nodes:\n  - kind: H100\n", 2, "nodes[0].devices", "required field is missing"),
    ("nodes:\n  - kind: H100\n    devices: 8\n    gpus: 8\n", 4, "nodes[0].gpus", "unknown field"),
    ("links:\n  inter_node:\n    bandwidth_gb_s: 0\nnodes:\n  - {kind: H100, devices: 1}\n", 3,
     "links.inter_node.bandwidth_gb_s", "must be > 0"),
    ("kinds:\n  - name: X\n    peak_tflops: 10\n    memory_gb: 8\n    memory_bandwidth_tb_s: 1\n"
     "    chip_link: {bandwidth_gb_s: 10}\n    source: rumour\n    confidence: low\n"
     "nodes:\n  - {kind: X, devices: 1}\n", 7, "kinds[0].source", "must be datasheet"),
    ("nodes: []\n", 1, "nodes", "non-empty list"),
    ("nodes:\n  - {kind: H100, devices: 8\n", 3, "<yaml>", ""),
])
def test_validation_errors_name_file_line_and_field(tmp_path, text, line, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ClusterError) as e:
        load_cluster(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: {field}"), msg
    assert words in msg


def test_missing_file_is_a_cluster_error(tmp_path):
    with pytest.raises(ClusterError, match="nope.yaml"):
        load_cluster(tmp_path / "nope.yaml")
