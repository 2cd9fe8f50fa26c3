"""The `hal` command.

    hal devices [--json]         every device of every plugin, smi-style
    hal info PLUGIN.so [--json]  what a plugin declares: ABI version, entries present and missing
    hal conformance PLUGIN.so    check a plugin against the ABI, its table driven directly (see --help)
    hal ops PLUGIN.so [--json]   which operators a plugin's devices run with their own kernels, against core ATen IR
    hal plan ...                 plan training across device types (see `hal plan --help`)
    hal demo                     plan and train across a mixed cluster of emulated devices
    hal launch ... SCRIPT [args] one worker process per device (see `hal launch --help`)
    hal sdk [--cmake-dir | --include | --samples | --smoke]  where the plugin SDK is (docs/plugin-sdk.md)
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


# --- hal devices -----------------------------------------------------------------------------------------
def cmd_devices(args: argparse.Namespace) -> int:
    from hal.inventory import print_devices

    print_devices(as_json=args.json, topology=args.topology)
    return 0


# --- hal info --------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    import hal

    info = hal.inspect_plugin(args.plugin)
    record = {"path": info.path, "name": info.name, "version": info.version,
              "abi": f"{info.abi_major}.{info.abi_minor}", "loader_abi": "%d.%d" % hal.ABI_VERSION,
              "entries": dict(info.entries), "extensions": dict(info.extensions), "error": info.error}
    if args.json:
        print(json.dumps(record, indent=2))
        return 1 if info.error else 0
    print(f"plugin   {info.path}")
    print(f"name     {info.name or '?'}  version {info.version or '?'}")
    print(f"ABI      {record['abi']} (this loader: {record['loader_abi']})")
    present = [e for e, ok in info.entries.items() if ok]
    missing = [e for e, ok in info.entries.items() if not ok]
    print(f"entries  {len(present)} present: {', '.join(present) or '-'}")
    print(f"         {len(missing)} missing: {', '.join(missing) or '-'}")
    extensions = ", ".join(f"{name} v{version}" for name, version in info.extensions)
    print(f"extensions {extensions or '-'}")
    if info.error:
        print(f"refused  {info.error}")
        return 1
    print("status   loadable")
    return 0


# --- hal conformance ------------------------------------------------------------------------------------
def cmd_conformance(args: argparse.Namespace) -> int:
    """The cffi areas (hal.conformance.abi) decide; --runtime adds the checks through HAL's runtime."""
    try:
        import cffi  # noqa: F401 - only to say clearly what is missing.
    except ImportError:
        print("hal conformance needs cffi: pip install 'hal[conformance]' (or pip install cffi)", file=sys.stderr)
        return 2
    from hal import conformance
    from hal.conformance import abi
    from hal.conformance.expectations import load_file

    print(f"HAL conformance: {args.plugin}", flush=True)
    expected = load_file(args.expected_failures) if args.expected_failures else {}
    abi_names = {n for cid in abi.select_cases() for n in (cid, cid.split(".", 1)[1], "test_" + cid.split(".", 1)[1])}
    mine = {k: v for k, v in expected.items() if k in abi_names or not args.runtime}
    try:
        report = abi.run(args.plugin, config=args.config, areas=args.area, device=args.device, timeout=args.timeout,
                         expected_failures=mine, report=args.report, verbose=args.verbose)
    except ValueError as e:
        print(f"hal conformance: {e}", file=sys.stderr)
        return 2
    code = 0 if report["passed"] else 1
    if args.runtime:
        print("\nThrough HAL's runtime (allocator, streams, collectives, operators):", flush=True)
        rest = {k: v for k, v in expected.items() if k not in mine}
        extra = ["-v", "--tb=short"] if args.verbose else []
        if args.k:
            extra += ["-k", args.k]
        code = max(code, conformance.run(args.plugin, config=args.config, expected_failures=rest or None,
                                         pytest_args=extra))
    return code


# --- hal ops --------------------------------------------------------------------------------------------
def cmd_ops(args: argparse.Namespace) -> int:
    import hal

    info = hal.inspect_plugin(args.plugin)
    if info.error:
        print(f"hal ops: {info.error}", file=sys.stderr)
        return 1
    hal.init([args.plugin], use_env=False, use_package_plugins=False,
             configs={info.name: args.config} if args.config else None)
    from hal.torch.coverage import coverage, handled_by_hal

    handled_by_hal()  # Before any device reaches the bridge (see hal.torch.coverage).
    reports = [coverage(d.name, d.operators()) for d in hal.devices()]
    if args.json:
        print(json.dumps({"plugin": info.path, "name": info.name, "devices": [r.as_dict() for r in reports]}, indent=2))
        return 0
    print(f"plugin {info.name} {info.version} at {info.path}")
    for r in reports:
        print(f"\n{r.device}: {len(r.native_core)} of {r.core_total} core ATen operators run natively "
              f"({100 * r.fraction:.1f} %), {len(r.native_other)} more outside core ATen IR; {len(r.by_hal)} "
              f"(views, factories, size queries) HAL runs itself on every device")
        rows = [(n, ", ".join(d), "core") for n, d in sorted(r.native_core.items())]
        rows += [(n, ", ".join(d), "") for n, d in sorted(r.native_other.items())]
        width = max([len(n) for n, _, _ in rows] + [8])
        for name, dtypes, tag in rows:
            print(f"  {name:<{width}}  {tag:<4}  {dtypes}")
        for name in r.unknown:
            print(f"  {name:<{width}}  ?     not an operator of this torch (never used)")
        if args.missing:
            print(f"  without a kernel (these run decomposed or on the CPU): {', '.join(r.missing_core)}")
    return 0


# --- hal demo --------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from hal.demo import run

    return run(args)


# --- hal sdk --------------------------------------------------------------------------------------------
def cmd_sdk(args: argparse.Namespace) -> int:
    from hal import plugin_sdk

    wanted = {"cmake_dir": plugin_sdk.cmake_dir, "include": plugin_sdk.include_dir,
              "samples": plugin_sdk.samples_dir, "smoke": plugin_sdk.smoke_driver}
    try:
        if args.part:  # One path alone, for $(hal sdk --cmake-dir), as `pybind11 --cmakedir` prints it.
            print(wanted[args.part]())
            return 0
        major, minor = plugin_sdk.abi_version()
        print(f"HAL plugin SDK, ABI {major}.{minor}")
        for label, find in (("cmake dir", plugin_sdk.cmake_dir), ("include", plugin_sdk.include_dir),
                            ("samples", plugin_sdk.samples_dir), ("smoke", plugin_sdk.smoke_driver),
                            ("guide", plugin_sdk.guide)):
            print(f"  {label:<10} {find()}")
    except plugin_sdk.SdkMissing as e:
        print(f"hal sdk: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hal", description="HAL: one layer for heterogeneous accelerators")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("devices", help="list every device of every plugin")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--topology", action="store_true", help="also the links between devices (hal.topology)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("info", help="what a plugin declares (ABI version, entries)")
    p.add_argument("plugin", help="path to a plugin shared library")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("conformance", help="check a plugin against the ABI, its table driven directly")
    p.add_argument("plugin", help="path to a plugin shared library")
    p.add_argument("--config", help="configuration text for the plugin's initialize")
    p.add_argument("--expected-failures", metavar="FILE",
                   help="YAML mapping of test name -> reason for tests the plugin is known to fail")
    p.add_argument("--report", metavar="FILE", help="write every area's and test's outcome to FILE (JSON)")
    p.add_argument("--area", action="append", metavar="NAME",
                   help="run only this area (repeatable; loading always runs): " + ", ".join(
                       ["loading", "properties", "memory", "copies", "streams", "events", "errors", "pinned",
                        "kernels", "threading", "collectives"]))
    p.add_argument("--device", type=int, default=0, help="the local device the device areas use (default 0)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds each test may take (default 30)")
    p.add_argument("--runtime", action="store_true",
                   help="then also run the checks through HAL's runtime (its allocator, collectives, torch operators)")
    p.add_argument("-k", metavar="EXPR", help="with --runtime: only runtime tests matching this pytest expression")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser("ops", help="operators a plugin runs with its own kernels, against core ATen IR")
    p.add_argument("plugin", help="path to a plugin shared library")
    p.add_argument("--config", help="configuration text for the plugin's initialize")
    p.add_argument("--missing", action="store_true", help="also list the core operators without a kernel")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("sdk", help="where the plugin SDK is: headers, CMake package, samples, smoke driver")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--cmake-dir", dest="part", action="store_const", const="cmake_dir",
                      help="the folder of halConfig.cmake (cmake -Dhal_DIR=...)")
    part.add_argument("--include", dest="part", action="store_const", const="include",
                      help="the folder holding hal/hal.h (cc -I...)")
    part.add_argument("--samples", dest="part", action="store_const", const="samples",
                      help="the folder of the sample plugins' sources (null/)")
    part.add_argument("--smoke", dest="part", action="store_const", const="smoke",
                      help="the built smoke driver (plugin_smoke PLUGIN.so [CONFIG])")
    p.set_defaults(func=cmd_sdk, part=None)

    from hal.demo import add_arguments as add_demo_arguments

    p = sub.add_parser("demo", help="mixed-cluster demo on emulated devices (--tour: API tour)")
    add_demo_arguments(p)
    p.set_defaults(func=cmd_demo)

    from hal.plan import cli as plan_cli

    plan_cli.add_parser(sub).set_defaults(func=plan_cli.run)

    # `hal launch` parses its own flags (main hands it argv untouched); listed here for `hal --help`.
    sub.add_parser("launch", help="one worker process per device, on torch.distributed.elastic", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:
        from hal.launch.cli import main as launch_main

        return launch_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RuntimeError as e:  # HalError is one; importing it needs hal._C, which `hal sdk` does not.
        from hal.errors import HalError

        if not isinstance(e, HalError):
            raise
        print(f"hal {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
