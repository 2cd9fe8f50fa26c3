"""`hal launch` flags and the checks made before any worker starts.

Flags that torchrun has mean what they mean there (also spelled with underscores); HAL's own: --devices,
--cluster, --plan, --run-dir. Bad input -> one line on stderr, exit 2, no worker started.
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from hal.launch.plan_file import LaunchError, read_cluster, read_plan

__all__ = ["main", "build_parser", "EXIT_USAGE"]

EXIT_USAGE = 2


def _flag(p: argparse.ArgumentParser, name: str, **kw) -> None:
    names = [name] + ([name.replace("-", "_").replace("__", "--", 1)] if "-" in name[2:] else [])
    p.add_argument(*names, **kw)


def build_parser(prog: str = "hal launch") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Start one worker process per device on this node (torch.distributed.elastic), each "
                    "seeing only its device as hal:0; restart the job on the remaining devices when one is lost.",
        epilog="Exit codes: 0 done; 1 the job failed (restarts spent, no device left, rendezvous error); "
               "2 bad input or a worker's configuration error (exit 78). See docs/training.md.")
    g = p.add_argument_group("torchrun's flags")
    _flag(g, "--nnodes", default="1", help="number of nodes, N or MIN:MAX (default 1)")
    _flag(g, "--node-rank", type=int, default=0, help="this node's rank, 0..N-1 (default 0); stable across restarts")
    _flag(g, "--nproc-per-node", default=None,
          help="workers on this node (default: one per selected device; N <= devices runs on the first N)")
    _flag(g, "--rdzv-backend", default="c10d", help="elastic rendezvous backend (default c10d)")
    _flag(g, "--rdzv-endpoint", default="",
          help="HOST:PORT of the rendezvous (default on one node: 127.0.0.1 and a free port; required for more)")
    _flag(g, "--rdzv-id", default="hal", help="job id shared by all nodes (default 'hal')")
    _flag(g, "--rdzv-conf", default="", help="extra rendezvous settings, K=V,K=V (e.g. join_timeout=60)")
    _flag(g, "--local-addr", default=None,
          help="this node's address for the others (default: the one that routes to the rendezvous host)")
    _flag(g, "--max-restarts", type=int, default=3, help="restarts before giving up (default 3)")
    _flag(g, "--monitor-interval", type=float, default=0.5, help="seconds between worker checks (default 0.5)")
    g.add_argument("-m", "--module", action="store_true", help="SCRIPT is a module name (python -m)")
    _flag(g, "--run-path", action="store_true", help="run SCRIPT with runpy.run_path (the default; accepted)")
    _flag(g, "--no-python", action="store_true", help="SCRIPT is an executable, run without Python")
    _flag(g, "--log-dir", default=None, help="worker logs (default RUN_DIR/logs)")
    h = p.add_argument_group("HAL's flags")
    h.add_argument("--devices", default=None,
                   help="devices to run on: 'all', a plugin (emu), a kind (emu-fast) or names (emu:0,emu:2); "
                        "default: every device but the host's CPU (the cpu plugin's, and real CPU devices of "
                        "other plugins such as an OpenCL CPU device)")
    h.add_argument("--cluster", default=None, help="cluster file: this node must be its node --node-rank")
    h.add_argument("--plan", default=None, help="plan file (hal plan --json): checked against the devices")
    _flag(h, "--run-dir", default="hal-run", help="the job's directory: launch.json, logs (default ./hal-run)")
    p.add_argument("script", metavar="SCRIPT", help="the training script (or module with -m)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="...", help="the script's arguments")
    return p


def _nnodes(text: str) -> tuple[int, int]:
    try:
        parts = [int(x) for x in text.split(":")]
    except ValueError:
        raise LaunchError(f"--nnodes {text!r}: expected N or MIN:MAX (whole numbers)") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
        raise LaunchError(f"--nnodes {text!r}: expected N or MIN:MAX with 1 <= MIN <= MAX")
    return parts[0], parts[1]


def _conf(text: str) -> dict:
    out = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise LaunchError(f"--rdzv-conf {text!r}: expected KEY=VALUE pairs separated by commas, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _split_endpoint(endpoint: str) -> tuple[str, int | None]:
    host, sep, port = endpoint.rpartition(":")
    if not sep:
        return endpoint, None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise LaunchError(f"--rdzv-endpoint {endpoint!r}: the port {port!r} is not a number") from None


def _route_addr(host: str) -> str | None:
    """The address of this machine that packets to `host` leave from (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def _is_local(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def prepare(args: argparse.Namespace):
    """The checked launch (a hal.launch.supervise.LaunchSpec, made without importing torch first)."""
    min_nodes, max_nodes = _nnodes(args.nnodes)
    if args.node_rank < 0 or args.node_rank >= max_nodes:
        raise LaunchError(f"--node-rank {args.node_rank}: must be in 0..{max_nodes - 1} for --nnodes {args.nnodes}")
    nproc = None
    if args.nproc_per_node not in (None, "", "auto"):
        try:
            nproc = int(args.nproc_per_node)
        except ValueError:
            raise LaunchError(f"--nproc-per-node {args.nproc_per_node!r}: expected a number of workers") from None
        if nproc < 1:
            raise LaunchError(f"--nproc-per-node {nproc}: must be at least 1")
    if args.max_restarts < 0:
        raise LaunchError(f"--max-restarts {args.max_restarts}: must be 0 or more")
    if not args.monitor_interval > 0:
        raise LaunchError(f"--monitor-interval {args.monitor_interval}: must be more than 0 seconds")
    conf = _conf(args.rdzv_conf)
    endpoint = args.rdzv_endpoint
    if not endpoint:
        if max_nodes > 1:
            raise LaunchError(f"--nnodes {args.nnodes}: several nodes need --rdzv-endpoint HOST:PORT (the "
                              f"rendezvous host, e.g. node 0's address)")
        endpoint = f"127.0.0.1:{_free_port()}"
    host, _ = _split_endpoint(endpoint)
    if args.module and args.no_python:
        raise LaunchError("-m/--module and --no-python exclude each other")
    script = args.script
    if not args.module and not args.no_python and not Path(script).is_file():
        raise LaunchError(f"{script}: no such script (for a module, use -m)")

    cluster = read_cluster(args.cluster) if args.cluster else None
    plan = read_plan(args.plan) if args.plan else None

    from hal.launch.devices import node_devices

    records = node_devices(args.devices, args.node_rank, nproc, cluster, plan, plan_path=args.plan or "",
                           single_node=max_nodes == 1)

    if "is_host" not in conf and args.rdzv_backend == "c10d":
        # Elastic guesses from the host name, which misses addresses of other interfaces (a second network,
        # a namespace): node 0 hosts the rendezvous when the endpoint is one of its addresses.
        conf["is_host"] = "1" if args.node_rank == 0 and _is_local(host) else "0"
    local_addr = args.local_addr or _route_addr(host)

    from hal.launch.supervise import LaunchSpec

    run_dir = Path(args.run_dir).resolve()
    if args.no_python:
        entrypoint, wargs = script, tuple(args.script_args)
    else:
        entrypoint = sys.executable
        wargs = ("-u", "-m", "hal.launch.worker", *(["-m", script] if args.module else [script]), *args.script_args)
    return LaunchSpec(records=records, entrypoint=entrypoint, args=wargs, node_rank=args.node_rank,
                      nnodes=args.nnodes, min_nodes=min_nodes, max_nodes=max_nodes, rdzv_backend=args.rdzv_backend,
                      rdzv_endpoint=endpoint, rdzv_id=args.rdzv_id, rdzv_conf=conf, local_addr=local_addr,
                      max_restarts=args.max_restarts, monitor_interval=args.monitor_interval, run_dir=run_dir,
                      log_dir=Path(args.log_dir).resolve() if args.log_dir else None,
                      plan_path=str(Path(args.plan).resolve()) if args.plan else None,
                      cluster_path=str(Path(cluster.path or args.cluster).resolve()) if cluster is not None else None)


def main(argv: list[str] | None = None, prog: str = "hal launch") -> int:
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        launch = prepare(args)
    except LaunchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    from hal.launch.supervise import run

    return run(launch)
