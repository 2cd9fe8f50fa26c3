"""The device inventory: every device of every plugin, as records (`hal devices --json`) and as a table.

Shared by `hal devices` and `hal demo`; reads only the public API.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from hal._format import fmt_bytes, print_table

__all__ = ["device_record", "print_devices"]


def device_record(d) -> dict:
    """One device; memory figures are None where the plugin cannot tell (no device_get_memory_info)."""
    from hal.errors import HalError

    p = d.properties
    try:
        free, total = d.memory_info()
    except HalError:
        free = total = None
    return {
        "index": d.index, "name": d.name, "model": p.name, "vendor": p.vendor, "kind": p.kind,
        "plugin": d.plugin, "plugin_path": d.plugin_path, "emulated": p.emulated,
        "memory_used": None if total is None else total - free, "memory_total": total,
        "host_addressable": p.host_addressable, "relative_speed": p.relative_speed,
        "peak_flops": p.peak_flops, "memory_bandwidth": p.memory_bandwidth,
        # The plugin's "hal.topology" extension (ABI 1.2); None when it declares none.
        "links": None if (links := d.links()) is None else [dataclasses.asdict(link) for link in links],
    }


def print_devices(as_json: bool = False, topology: bool = False) -> None:
    """The smi-style table (emulated devices say so), or one JSON document; plugins that did not load are
    named on stderr (in the JSON document, under "load_errors"). With |topology|, the table is followed by
    every device's links (the plugins' "hal.topology" extension)."""
    import hal

    records = [device_record(d) for d in hal.devices()]
    errors = hal.load_errors()
    if as_json:
        print(json.dumps({"devices": records, "load_errors": [{"path": p, "error": e} for p, e in errors]},
                         indent=2))
        return
    rows = []
    for r in records:
        model = r["model"] + (" (emulated)" if r["emulated"] else "")
        speed = f"{r['relative_speed']:.2f}x" if r["emulated"] else "-"
        memory = ("unknown" if r["memory_total"] is None
                  else f"{fmt_bytes(r['memory_used'])} / {fmt_bytes(r['memory_total'])}")
        rows.append([f"hal:{r['index']}", r["name"], model, r["vendor"], r["kind"], r["plugin"], memory,
                     "yes" if r["emulated"] else "no", speed])
    print_table(f"HAL devices (ABI {hal.ABI_VERSION[0]}.{hal.ABI_VERSION[1]})",
                ["torch", "device", "model", "vendor", "kind", "plugin", "memory used / total", "emulated",
                 "speed"], rows)
    if topology:
        print_links(records)
    for path, message in errors:
        print(f"warning: plugin not loaded: {path}: {message}", file=sys.stderr)


def print_links(records: list[dict]) -> None:
    """One row per link of every device; devices whose plugin declares no topology say "unknown"."""
    rows = []
    for r in records:
        for link in r["links"] or []:
            rows.append([r["name"], link["peer"], link["kind"], "yes" if link["peer_access"] else "no",
                         f"{link['bandwidth'] / 1e9:.1f} GB/s" if link["bandwidth"] else "unknown",
                         f"{link['latency'] * 1e6:.1f} us" if link["latency"] else "unknown"])
        if r["links"] is None:
            rows.append([r["name"], "-", "unknown (no hal.topology)", "-", "-", "-"])
    print_table("Links (hal.topology; emulated devices: figures of the emulation)",
                ["device", "peer", "kind", "peer access", "bandwidth", "latency"], rows)
