"""torch.hal.memory_summary(): HAL's allocator statistics as a table in torch.cuda.memory_summary's shape.

Rows and columns are torch.cuda's (current, peak, total allocated, total freed). HAL's caching allocator keeps
fewer figures than CUDA's (docs/torch.md, Known limits): it has no small/large pool split, no cumulative byte
totals, no peaks of the counts, and no split or oversize blocks. Those cells read `n/a`, never a made-up 0.
"""
from __future__ import annotations

from typing import Any

_BYTES = ("current", "peak")
_COUNTS = ("current", "allocated", "freed")
# (row title, memory_stats prefix, the columns HAL tracks, is a byte figure)
_ROWS = (
    ("Allocated memory", "allocated_bytes.all", _BYTES, True),
    ("Active memory", "active_bytes.all", _BYTES, True),
    ("Requested memory", "requested_bytes.all", _BYTES, True),
    ("Reserved memory", "reserved_bytes.all", _BYTES, True),
    ("Allocations", "allocation.all", _COUNTS, False),
    ("Active allocs", "active.all", ("current",), False),
    ("Reserved segments", "segment.all", _COUNTS, False),
)
_EVENTS = (("Device allocations", "num_device_alloc"), ("Device frees", "num_device_free"),
           ("Allocation retries", "num_alloc_retries"), ("Out of memory errors", "num_ooms"))
_WIDTH = 84


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def _cells(stats: dict[str, Any], prefix: str, tracked: tuple[str, ...], is_bytes: bool) -> list[str]:
    cells = []
    for column in ("current", "peak", "allocated", "freed"):
        value = stats.get(f"{prefix}.{column}") if column in tracked else None
        cells.append("n/a" if value is None else _size(value) if is_bytes else str(value))
    return cells


def format_summary(device_label: str, stats: dict[str, Any]) -> str:
    line = "|" + "=" * (_WIDTH - 2) + "|"
    rule = "|" + "-" * (_WIDTH - 2) + "|"
    out = [line, f"| {'HAL memory summary, device ' + device_label:<{_WIDTH - 4}} |", line]
    if not stats:
        out += [f"| {'no statistics yet: the device has not been used in this process':<{_WIDTH - 4}} |", line]
        return "\n".join(out)
    out.append(f"| {'Metric':<22}| {'Cur Usage':>12} | {'Peak Usage':>12} | {'Tot Alloc':>12} | {'Tot Freed':>12} |")
    out.append(rule)
    for title, prefix, tracked, is_bytes in _ROWS:
        cur, peak, alloc, freed = _cells(stats, prefix, tracked, is_bytes)
        out.append(f"| {title:<22}| {cur:>12} | {peak:>12} | {alloc:>12} | {freed:>12} |")
    out.append(rule)
    for title, key in _EVENTS:
        out.append(f"| {title:<22}| {stats.get(key, 0):>12} |{'':<{_WIDTH - 41}}|")
    out.append(rule)
    note = "n/a: not tracked by HAL's allocator (no pools, byte totals, count peaks)"
    out += [f"| {note:<{_WIDTH - 4}} |", line]
    return "\n".join(out)
