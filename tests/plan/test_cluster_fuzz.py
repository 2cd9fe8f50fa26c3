"""Random and mutated cluster YAML: the loader either returns a cluster whose every figure is finite and
positive, or raises ClusterError as `file:line: field: message`; never another exception."""
from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.plan.cluster import PRESET_DIR, ClusterError, parse_cluster

SEEDS = [p.read_text() for p in sorted((PRESET_DIR / "clusters").glob("*.yaml"))] + ["""
name: rich
kinds:
  - {name: fast, base: H100, efficiency: 0.6, relative_speed: 2, emulated: true, source: measured}
  - name: custom
    peak_tflops: 100
    memory_gb: 16
    memory_bandwidth_tb_s: 1.5
    chip_link: {bandwidth_gb_s: 50, latency_us: 3}
    source: datasheet
    confidence: low
links:
  inter_node: &link {bandwidth_gb_s: 25, latency_us: 10}
  cross_kind: {bandwidth_gb_s: 12.5, latency_us: 20}
nodes:
  - {kind: fast, devices: 4, replicas: 2, intra_node: {bandwidth_gb_s: 300}, inter_node: *link}
  - {kind: custom, devices: 2}
""", """
name: topology
links:
  pairs:
    - {between: [a, b.1], bandwidth_gb_s: 5, latency_us: 30}
nodes:
  - {name: a, kind: H100, devices: 8, nics: {count: 2, bandwidth_gb_s: 50, latency_us: 5}}
  - {name: b, kind: MI300X, devices: 4, replicas: 2}
"""]
VALUES = ["0", "-1", "1", "8", ".nan", ".inf", "-.inf", "true", "null", "~", "1e308", "1e-300", "99999999999999999999",
          "'8'", "[]", "{}", "[1, 2]", "{a: 1}", "*x", "&x 3", "!!int x", "!!float y", "!!binary AAAA", "2001-12-14",
          "!!python/object:os.system x", "? [a]", "0x10", "0o7", "1_000", ".5", "-0.0", "H100", "\"\\x00\"", "<<: *x"]
LOCATION = re.compile(r"^fuzz\.yaml:\d+: \S+")


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["value", "delete", "duplicate", "insert", "truncate", "indent"]))
        lines = text.splitlines(keepends=True) or ["\n"]
        i = draw(st.integers(0, len(lines) - 1))
        if how == "value":
            spots = [m.end() for m in re.finditer(r":\s", text)]
            if spots:
                at = draw(st.sampled_from(spots))
                end = min([j for j in (text.find(c, at) for c in ",}\n") if j >= 0] or [len(text)])
                text = text[:at] + draw(st.sampled_from(VALUES)) + text[end:]
        elif how == "delete":
            text = "".join(lines[:i] + lines[i + 1:])
        elif how == "duplicate":
            text = "".join(lines[:i + 1] + lines[i:])
        elif how == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(alphabet=" \n:-{}[],&*!?#'\"%@`|>aZ0.9\t", max_size=12)) + text[at:]
        elif how == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        else:
            lines[i] = "  " + lines[i]
            text = "".join(lines)
    return text


def _check(text: str) -> None:
    try:
        c = parse_cluster(text, "fuzz.yaml")
    except ClusterError as e:
        assert LOCATION.match(str(e)), str(e)
        return
    assert 0 < c.num_devices
    for k in c.kinds.values():
        for v in (k.peak_flops, k.memory_bytes, k.memory_bandwidth, k.efficiency, k.relative_speed,
                  k.chip_link.bandwidth):
            assert math.isfinite(v) and v > 0, k
        assert math.isfinite(k.chip_link.latency) and k.chip_link.latency >= 0
    for n in c.nodes:
        for link in (n.intra, n.inter):
            assert math.isfinite(link.bandwidth) and link.bandwidth > 0 and math.isfinite(link.latency)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_cluster_files_load_or_name_file_and_line(text):
    _check(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text_loads_or_names_file_and_line(text):
    _check(text)


def test_seeds_load():
    for text in SEEDS:
        assert parse_cluster(text, "fuzz.yaml").num_devices > 0
