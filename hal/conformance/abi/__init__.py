"""The conformance suite that drives a plugin's table directly through cffi, with no HAL runtime in between.

Tests live in areas (areas/, one module each; case.AREAS lists them with what each covers). Each test runs
in a worker process under a timeout (runner.py): a test that hangs or crashes fails naming the entries in
flight, and the run goes on. Each ends pass, fail, unsupported (the plugin lacks an optional entry or has no
device: named) or skip (with a reason). An area fails when one of its tests fails; the run fails when a
required area fails, or an optional area whose entries the plugin has.

`run()` is what `hal conformance` calls.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from hal.conformance.abi.case import AREAS, CASES
from hal.conformance.abi.runner import Result, run_cases

__all__ = ["AREAS", "CASES", "run", "select_cases", "summarize"]


def _registered() -> dict:
    from hal.conformance.abi import areas  # noqa: F401 - registers every test.
    return CASES


def select_cases(areas: list[str] | None = None) -> list[str]:
    """Test ids in run order; `areas` restricts them (loading's table checks always run, shutdown last)."""
    cases = _registered()
    unknown = sorted(set(areas or ()) - set(AREAS))
    if unknown:
        raise ValueError(f"no area {', '.join(unknown)}; the areas are {', '.join(AREAS)}")
    chosen = []
    for area in AREAS:
        for cid, c in cases.items():
            if c.area == area and cid != "loading.shutdown" and (not areas or area in areas or area == "loading"):
                chosen.append(cid)
    return chosen + ["loading.shutdown"]


def _names(cid: str) -> set[str]:
    """The names an expected-failures file may use for test `cid`: "area.test", "test", "test_test"."""
    short = cid.split(".", 1)[1]
    return {cid, short, "test_" + short}


def apply_expected_failures(results: list[Result], expected: dict[str, str]) -> list[str]:
    """Listed tests must fail (xfail); one that passes is xpass, itself a failure. Returns the stale names."""
    by_name: dict[str, list[Result]] = {}
    for r in results:
        by_name.setdefault(r.id, []).append(r)
        by_name.setdefault(r.id.split(".", 1)[1], []).append(r)
        by_name.setdefault("test_" + r.id.split(".", 1)[1], []).append(r)
    for key, reason in expected.items():
        for r in by_name.get(key, []):
            if r.status == "fail":
                r.status, r.reason = "xfail", f"expected: {reason} (failed: {r.reason})"
            elif r.status == "pass":
                r.status, r.reason = "xpass", f"listed as an expected failure ({reason}) but passed"
    return sorted(k for k in expected if k not in by_name)


def summarize(plugin, results: list[Result], stale: list[str]) -> dict:
    """The report: plugin, per area its status and tests, and whether the run passed."""
    from hal.conformance.abi import ffi as abi

    try:
        p = abi.Plugin(plugin)
    except Exception:  # Not loadable: the loading area says why.
        p = None
    areas = {}
    for name, area in AREAS.items():
        tests = [r for r in results if r.id.split(".", 1)[0] == name]
        if not tests:
            continue
        declared = p is not None and any(p.has(e) for e in area.entries)
        failed = [r for r in tests if r.status in ("fail", "xpass")]
        status = "fail" if failed else "pass" if any(r.status in ("pass", "xfail") for r in tests) else \
            "unsupported" if any(r.status == "unsupported" for r in tests) else "skip"
        areas[name] = {"required": area.required or declared, "status": status, "doc": area.doc,
                       "tests": [dict(r.as_dict(), name=r.id.split(".", 1)[1]) for r in tests]}
    failing = [n for n, a in areas.items() if a["status"] == "fail" and a["required"]]
    return {"plugin": str(Path(plugin).resolve()), "name": p.name if p else "", "version": p.version if p else "",
            "abi": f"{p.raw.abi_major}.{p.raw.abi_minor}" if p else "", "loader_abi": f"{abi.ABI_MAJOR}.{abi.ABI_MINOR}",
            "stale_expected_failures": stale, "failed_areas": failing,
            "passed": not failing and not stale, "areas": areas}


SYMBOL = {"pass": "PASS", "fail": "FAIL", "unsupported": "UNSUP", "skip": "SKIP", "xfail": "XFAIL", "xpass": "XPASS"}


def run(plugin: str | os.PathLike, *, config: str | None = None, areas: list[str] | None = None,
        device: int = 0, timeout: float = 30.0, expected_failures: dict[str, str] | None = None,
        report: str | os.PathLike | None = None, verbose: bool = False, out=sys.stdout) -> dict:
    """Runs the suite against `plugin`; prints a line per failure (every test with `verbose`), writes the
    report to `report` (JSON) and returns it."""
    from hal.conformance.abi import ffi as abi

    plugin = str(Path(plugin).resolve())
    started = time.monotonic()
    try:
        p = abi.Plugin(plugin)
        print(f"  plugin {p.name or '?'} {p.version}, ABI {p.raw.abi_major}.{p.raw.abi_minor} (this suite: "
              f"{abi.ABI_MAJOR}.{abi.ABI_MINOR}); driven through its table, no HAL runtime", file=out)
        print(f"  optional entries present: {', '.join(e for e in abi.OPTIONAL_ENTRIES if p.has(e)) or '-'}", file=out)
        print(f"  optional entries missing: {', '.join(e for e in abi.OPTIONAL_ENTRIES if not p.has(e)) or '-'}",
              file=out, flush=True)
    except Exception as e:  # The loading area reports it.
        print(f"  cannot read the plugin's table: {e}", file=out)

    def line(r: Result) -> None:
        print(f"  {SYMBOL[r.status]:<5} {r.id} ({r.duration_s:.2f} s){': ' + r.reason if r.reason else ''}",
              file=out, flush=True)

    def show(r: Result) -> None:  # As they come; listed expected failures once their verdict is known.
        if verbose or r.status == "fail" and not (expected_failures or {}).keys() & _names(r.id):
            print(f"  {SYMBOL[r.status]:<5} {r.id} ({r.duration_s:.2f} s){': ' + r.reason if r.reason else ''}",
                  file=out, flush=True)

    results = run_cases(plugin, select_cases(areas), config=config, device=device, timeout=timeout, on_result=show)
    stale = apply_expected_failures(results, expected_failures or {})
    for r in results:
        if r.status in ("xpass", "xfail") and (verbose or r.status == "xpass"):
            line(r)
    summary = summarize(plugin, results, stale)
    summary["config"], summary["device"], summary["duration_s"] = config, device, round(time.monotonic() - started, 2)
    print(file=out)
    for name, a in summary["areas"].items():
        counts = {}
        for t in a["tests"]:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        why = ""
        if a["status"] in ("unsupported", "skip"):
            why = ": " + next(t["reason"] for t in a["tests"] if t["reason"])
        flag = "" if a["required"] else " (optional)"
        print(f"  {name:<12} {a['status'].upper():<12}{text}{flag}{why}", file=out)
    for name in stale:
        print(f"  expected-failures entry {name!r} names no test (stale)", file=out)
    untested = all(a["status"] in ("unsupported", "skip") for n, a in summary["areas"].items() if n != "loading")
    summary["untested"] = untested and summary["passed"]
    verdict = "loads, but no device area could run here (see above): not tested beyond loading" \
        if summary["untested"] else "conformant" if summary["passed"] else f"NOT conformant: {', '.join(summary['failed_areas']) or 'stale expected failures'}"
    print(f"\n{summary['name'] or plugin}: {verdict} ({summary['duration_s']:.1f} s)", file=out, flush=True)
    if report:
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
