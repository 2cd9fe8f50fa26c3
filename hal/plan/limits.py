"""What the planner accepts: the bounds of every input, and the one check each number goes through.

The bounds keep every figure the cost model derives finite and positive in float64 (so a prediction is never
`nan`, `inf` or a division by zero) and keep the work bounded (no input makes the planner allocate or loop in
proportion to a number the user typed). docs/planner.md lists them under "Limits".
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["FIGURE_MIN", "FIGURE_MAX", "MAX_DEVICES_PER_NODE", "MAX_REPLICAS", "MAX_DEVICES", "MAX_GLOBAL_BATCH",
           "MAX_SEQ", "MAX_TP", "MAX_LAYERS", "MAX_CLUSTER_FILE_BYTES", "MAX_JSON_FILE_BYTES", "MAX_YAML_DEPTH",
           "check_number", "is_power_of_two", "read_bounded", "load_json"]

FIGURE_MIN, FIGURE_MAX = 1e-6, 1e6     # any positive device or link figure, in its field's unit (TFLOP/s, GB, ...)
MAX_DEVICES_PER_NODE = 4096
MAX_REPLICAS = 65536
MAX_DEVICES = 65536                    # per cluster
MAX_GLOBAL_BATCH = 2 ** 53             # the largest sample count float64 arithmetic still counts exactly
MAX_SEQ = 2 ** 24                      # tokens per sequence
MAX_TP = 4096
MAX_LAYERS = 100_000
MAX_CLUSTER_FILE_BYTES = 1 << 20       # YAML parsing costs ~1 s per MiB: a larger file is refused, not parsed
MAX_JSON_FILE_BYTES = 64 << 20         # model and device profiles (JSON parses in C)
MAX_YAML_DEPTH = 32                    # nesting of mappings and lists in a cluster file


def check_number(value: Any, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> float | int:
    """`value` if it is a finite int (or, unless `integer`, float) in [lo, hi] ((lo, hi] when `lo_open`); raises
    ValueError saying what is wrong otherwise. Booleans are not numbers here."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"expected {'int' if integer else 'int/float'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    def show(bound: float) -> str:
        return str(int(bound)) if integer else f"{bound:g}"

    if value < lo or (lo_open and value == lo):
        if lo_open:
            need = f"> {show(lo)}"
        elif value <= 0 < lo:
            need = "> 0"
        else:
            need = f">= {show(lo)}" if lo == 0 else f"at least {show(lo)}"
        raise ValueError(f"must be {need}, got {value!r}")
    if value > hi:
        raise ValueError(f"must be at most {show(hi)}, got {value!r}")
    return value


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def read_bounded(path: str | Path, limit: int) -> str:
    """The text of `path`, reading at most `limit` + 1 bytes (a device or a FIFO cannot make it read forever).
    Raises OSError as the system does, ValueError for a file over `limit` or not UTF-8."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"file is larger than the {limit:,}-byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None


def load_json(path: str | Path, limit: int = MAX_JSON_FILE_BYTES) -> Any:
    """The JSON document in `path` (read_bounded). Raises OSError, or ValueError for a file too large, not
    UTF-8, not JSON, or nested too deeply for the parser."""
    try:
        return json.loads(read_bounded(path, limit))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
