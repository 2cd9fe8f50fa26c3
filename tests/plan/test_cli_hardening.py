"""`hal plan` on bad input: one line naming what is wrong, exit status 2, no traceback, bounded work.

Samples of a class: every CLI flag, every numeric field of a cluster, model or device-profile file, every
output path."""
from __future__ import annotations

import json
import types

import pytest

from hal.plan import cli
from hal.plan.limits import MAX_CLUSTER_FILE_BYTES
from hal.plan.model import get_model
from tests.plan.test_cli import run_cli as run_subprocess

BASE = ("--model", "tiny", "--global-batch", "16", "--no-compare")


@pytest.fixture
def run_cli(capsys):
    """`hal plan` in this process (an exception escaping it fails the test); returns what a subprocess would."""
    def run(*args: str) -> types.SimpleNamespace:
        try:
            code = cli.main(list(args))
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


def _bad(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hal plan: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("flags, words", [
    (("--seq", "0"), ["--seq", "> 0"]),
    (("--seq", "-5"), ["--seq"]),
    (("--seq", str(2 ** 24 + 1)), ["--seq", "at most"]),
    (("--tp", "3"), ["--tp", "3 is not a power of two"]),
    (("--tp", "0"), ["--tp"]),
    (("--tp", "1,,2"), ["--tp", "expected an integer"]),
    (("--micro-batches", "0"), ["--micro-batches"]),
    (("--micro-batches", "nan"), ["--micro-batches", "expected an integer"]),
    (("--global-batch", "0"), ["--global-batch"]),
    (("--global-batch", str(10 ** 30)), ["--global-batch", "at most 9007199254740992"]),
    (("--global-batch", "inf"), ["--global-batch", "expected an integer"]),
    (("--model", "no-such-model"), ["--model", "unknown model"]),
    (("--model", "missing.json"), ["--model missing.json", "No such file"]),
])
def test_bad_flags(flags, words, run_cli):
    _bad(run_cli("--cluster", "small-8", *BASE, *flags), *words)


def test_missing_required_flag_is_one_line(run_cli):
    _bad(run_cli("--cluster", "small-8", "--model", "tiny"), "--global-batch")


def test_huge_global_batch_plans_without_simulating_every_micro_batch(run_cli):
    """10^12 sequences used to build a billion-event simulation until the memory ran out."""
    r = run_subprocess("--cluster", "small-8", "--model", "tiny", "--global-batch", str(10 ** 12), "--no-compare")
    assert r.returncode == 0, r.stderr
    assert "tokens/s" in r.stdout and "nan" not in r.stdout
    assert "simulated (event by event): skipped" in r.stdout


def test_huge_global_batch_with_plot_names_the_limit(tmp_path, run_cli):
    _bad(run_cli("--cluster", "small-8", *BASE[:2], "--global-batch", str(10 ** 12), "--plot",
                 str(tmp_path / "p.png")), "--plot", "1,000,000")


@pytest.mark.parametrize("flag", ["--json", "--plot"])
@pytest.mark.parametrize("where", ["/nonexistent-dir/out", "DIR", "/proc/version"])
def test_unwritable_outputs(tmp_path, flag, where, run_cli):
    path = str(tmp_path) if where == "DIR" else where
    _bad(run_cli("--cluster", "small-8", *BASE, flag, path), flag)


def test_output_that_fails_while_writing(tmp_path, run_cli):
    _bad(run_cli("--cluster", "small-8", *BASE, "--json", "/dev/full"), "--json /dev/full", "No space")
    _bad(run_cli("--cluster", "small-8", *BASE, "--plot", str(tmp_path / "p.unknown-format")), "--plot")


CLUSTER_FIELDS = [
    "links:\n  inter_node: {{bandwidth_gb_s: 10, latency_us: {v}}}\nnodes:\n  - {{kind: H100, devices: 8}}\n",
    "links:\n  inter_node: {{bandwidth_gb_s: {v}}}\nnodes:\n  - {{kind: H100, devices: 8}}\n",
    "nodes:\n  - {{kind: H100, devices: {v}}}\n",
    "nodes:\n  - {{kind: H100, devices: 2, replicas: {v}}}\n",
    "kinds:\n  - {{name: X, base: H100, peak_tflops: {v}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
    "kinds:\n  - {{name: X, base: H100, memory_gb: {v}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
    "kinds:\n  - {{name: X, base: H100, memory_bandwidth_tb_s: {v}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
    "kinds:\n  - {{name: X, base: H100, efficiency: {v}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
    "kinds:\n  - {{name: X, base: H100, relative_speed: {v}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
    "kinds:\n  - {{name: X, base: H100, chip_link: {{bandwidth_gb_s: {v}}}}}\nnodes:\n  - {{kind: X, devices: 1}}\n",
]


@pytest.mark.parametrize("template", CLUSTER_FIELDS)
@pytest.mark.parametrize("value", ["-1", "0", ".nan", ".inf", "-.inf", "true", "fast", "1e300", "[1]"])
def test_every_numeric_cluster_field_rejects_bad_numbers(tmp_path, template, value, run_cli):
    c = tmp_path / "c.yaml"
    c.write_text(template.format(v=value))
    if value == "0" and "latency_us" in template:
        assert run_cli("--cluster", str(c), *BASE).returncode == 0  # no latency is a latency
        return
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:")


@pytest.mark.parametrize("text, words", [
    ("a: &a [*a]\nnodes:\n  - {kind: H100, devices: 8}\n", ["recursive alias"]),
    ("kinds:\n  - {profile: [a, b]}\nnodes:\n  - {kind: H100, devices: 8}\n", ["kinds[0].profile", "expected str"]),
    ("nodes:\n  - {kind: H100, devices: 4096, replicas: 65536}\n", ["nodes[0].devices", "limit of 65536"]),
    ("nodes:\n  - {kind: H100, devices: !!int nope}\n", ["<yaml>", "nope"]),
    ("nodes:\n  - {kind: H100, devices: !!python/object:os.system x}\n", ["<yaml>"]),
    ("nodes:\n  - {kind: H100, devices: 8}\n  - ? [a]\n    : 1\n", ["a mapping key must be a scalar"]),
    ("nodes:\n  - {kind: H100, devices: 8, devices: 4}\n", ["duplicate key"]),
    ("nodes: " + "[" * 100 + "]" * 100 + "\n", ["nested deeper"]),
    ("--- {nodes: []}\n--- {nodes: []}\n", ["single document"]),
])
def test_malicious_cluster_files(tmp_path, text, words, run_cli):
    c = tmp_path / "c.yaml"
    c.write_text(text)
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:", *words)


def test_billion_laughs_is_shared_not_expanded(tmp_path, run_cli):
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
    c = tmp_path / "c.yaml"
    c.write_text(lol + "nodes: *i\n")  # 10^9 x's if aliases were expanded
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:")


def test_oversized_cluster_file_is_refused_unparsed(tmp_path, run_cli):
    c = tmp_path / "big.yaml"
    line = "  - {kind: H100, devices: 8}\n"
    c.write_text("nodes:\n" + line * (MAX_CLUSTER_FILE_BYTES // len(line) + 1))
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:0: <file>", "1,048,576-byte limit")
    _bad(run_subprocess("--cluster", "/dev/zero", *BASE), "/dev/zero:0: <file>", "limit")


def _profile(run_cli, tmp_path, **change):
    d = {"kind": "m", "device": "m:0", "memory_bandwidth": 1e12, "memory_bytes": 8e10,
         "matmul": [{"m": 1, "n": 1, "k": 1, "dtype": "bf16", "flops_per_s": 4e14}],
         "copy_link": {"latency": 1e-6, "bandwidth": 1e11}}
    d.update(change)
    (tmp_path / "p.json").write_text(json.dumps(d))
    c = tmp_path / "c.yaml"
    c.write_text("kinds:\n  - {profile: p.json}\nnodes:\n  - {kind: m, devices: 2}\n")
    return run_cli("--cluster", str(c), *BASE)


def test_measured_profile_fields_are_checked(tmp_path, run_cli):
    assert _profile(run_cli, tmp_path).returncode == 0
    for change, word in [({"copy_link": {"latency": float("nan"), "bandwidth": 1e11}}, "copy_link.latency"),
                         ({"memory_bandwidth": float("inf")}, "memory_bandwidth"),
                         ({"memory_bytes": -1}, "memory_bytes"), ({"matmul": []}, "matmul"),
                         ({"relative_speed": "fast"}, "relative_speed"), ({"surprise": 1}, "surprise"),
                         ({"emulated": 1}, "emulated")]:
        _bad(_profile(run_cli, tmp_path, **change), "kinds[0].profile", word)
    (tmp_path / "p.json").write_text("[1, 2]")
    _bad(run_cli("--cluster", str(tmp_path / "c.yaml"), *BASE), "expected a JSON object")


def _model_file(tmp_path, edit) -> str:
    d = get_model("tiny").to_dict()
    edit(d)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    return str(path)


@pytest.mark.parametrize("field", ["params", "fwd_flops", "act_bytes", "out_bytes", "tp_comm_bytes"])
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "x", 1e300, 10 ** 40])
def test_every_numeric_model_field_rejects_bad_numbers(tmp_path, field, value, run_cli):
    path = _model_file(tmp_path, lambda d: d["layers"][1].__setitem__(field, value))
    _bad(run_cli("--cluster", "small-8", "--model", path, "--global-batch", "8", "--no-compare"),
         f"--model {path}", f"model.layers[1].{field}")


@pytest.mark.parametrize("edit, word", [
    (lambda d: d.__setitem__("seq_len", 0), "model.seq_len"),
    (lambda d: d.__setitem__("dtype_bytes", float("nan")), "model.dtype_bytes"),
    (lambda d: d.__setitem__("bwd_factor", -2), "model.bwd_factor"),
    (lambda d: d.__setitem__("layers", []), "model.layers"),
    (lambda d: d["layers"][0].__setitem__("measured", {"H100": {"1": [float("nan"), 1.0]}}), "measured.H100.1"),
    (lambda d: d["layers"][0].__setitem__("measured", {"H100": {"one": [1.0, 1.0]}}), "measured.H100.one"),
    (lambda d: d["layers"][0].__setitem__("measured_optimizer", {"H100": -1}), "measured_optimizer.H100"),
    (lambda d: d.pop("name"), "model.name"),
])
def test_model_file_fields(tmp_path, edit, word, run_cli):
    path = _model_file(tmp_path, edit)
    _bad(run_cli("--cluster", "small-8", "--model", path, "--global-batch", "8", "--no-compare"), word)


def test_model_that_costs_nothing_is_bad_input(tmp_path, run_cli):
    def zero(d):
        for layer in d["layers"]:
            layer.update(params=0, fwd_flops=0.0, act_bytes=0.0, out_bytes=0.0, tp_comm_bytes=0.0)
    path = _model_file(tmp_path, zero)
    _bad(run_cli("--cluster", "small-8", "--model", path, "--global-batch", "8", "--no-compare"), "costs nothing")


def test_unreadable_inputs(tmp_path, run_cli):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    _bad(run_cli("--cluster", "small-8", "--model", str(deep), "--global-batch", "8"), "nested too deeply")
    c = tmp_path / "c.yaml"
    c.write_text(f"kinds:\n  - {{profile: {deep}}}\nnodes:\n  - {{kind: H100, devices: 8}}\n")
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:2: kinds[0].profile", "nested too deeply")
    _bad(run_cli("--cluster", str(tmp_path), *BASE), f"{tmp_path}:0: <file>")
    c.write_bytes(b"\xff\xfenodes: []\n")
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:0: <file>", "not UTF-8")
    c.write_text("")
    _bad(run_cli("--cluster", str(c), *BASE), f"{c}:1: <file>", "empty")
    bad_json = tmp_path / "m.json"
    bad_json.write_text("{nope")
    _bad(run_cli("--cluster", "small-8", "--model", str(bad_json), "--global-batch", "8"), f"--model {bad_json}")
