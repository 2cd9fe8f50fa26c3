"""Running the workers: torch.distributed.elastic's LocalElasticAgent, with HAL's bookkeeping of devices.

Elastic does the rendezvous, the ranks, the restarts and the worker processes. `HalAgent` adds:

- each worker's device in its environment (`worker_env`), set when elastic builds that environment;
- after a failed round, the root cause (the earliest failure; see `_root_cause`) decides what happens:
  killed by a signal or exit EXIT_DEVICE_LOST -> its device is dropped and elastic's restart runs the job on the
  others (local_world_size shrinks); EXIT_CONFIG -> no restart (the launcher exits 2); anything else -> elastic's
  normal restart on the same devices, up to --max-restarts;
- RUN_DIR/launch.json, rewritten at each round and each failure, and one line on stderr per event.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch.distributed.elastic.agent.server.api import WorkerSpec, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.rendezvous import RendezvousParameters, RendezvousTimeoutError
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler

from hal.parallel import EXIT_CONFIG, EXIT_DEVICE_LOST
from hal.parallel.devices import DeviceRecord

__all__ = ["LaunchSpec", "HalAgent", "run", "say"]


def say(msg: str) -> None:
    print(f"hal launch: {msg}", file=sys.stderr, flush=True)


@dataclass
class LaunchSpec:
    """What `hal launch` was asked to run, after the checks (see hal.launch.cli)."""
    records: list[DeviceRecord]
    entrypoint: str
    args: tuple
    node_rank: int = 0
    nnodes: str = "1"
    min_nodes: int = 1
    max_nodes: int = 1
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str = ""
    rdzv_id: str = "hal"
    rdzv_conf: dict = field(default_factory=dict)
    local_addr: str | None = None
    max_restarts: int = 3
    monitor_interval: float = 0.5
    run_dir: Path = Path("hal-run")
    log_dir: Path | None = None
    plan_path: str | None = None
    cluster_path: str | None = None


class NodeLogs(DefaultLogsSpecs):
    """Elastic's logs under LOG_DIR/node<N>/attempt_<restart>/<local rank>/{stdout,stderr}.log, error.json."""

    def __init__(self, log_dir: Path, node_rank: int):
        super().__init__(log_dir=str(log_dir), redirects=Std.ALL, tee=Std.ALL)
        self.node_dir = Path(log_dir) / f"node{node_rank}"

    def _make_log_dir(self, log_dir, rdzv_run_id):
        shutil.rmtree(self.node_dir, ignore_errors=True)  # a previous launch's attempts
        self.node_dir.mkdir(parents=True)
        return str(self.node_dir)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == EXIT_DEVICE_LOST:
        return f"exited with {code} (device lost)"
    if code == EXIT_CONFIG:
        return f"exited with {code} (configuration error)"
    return f"exited with {code}"


def _tail(path: str | None, lines: int = 8) -> list[str]:
    try:
        with open(path or "", errors="replace") as f:
            return [ln.rstrip("\n") for ln in f.readlines()[-lines:] if ln.strip()]
    except OSError:
        return []


class HalAgent(LocalElasticAgent):
    def __init__(self, spec: WorkerSpec, logs: NodeLogs, launch: LaunchSpec, **kwargs):
        super().__init__(spec, logs, start_method="spawn", **kwargs)
        self.launch = launch
        self.selected = list(launch.records)
        self.live = list(launch.records)
        self.lost: list[dict] = []
        self.rounds: list[dict] = []
        self.failures: list[dict] = []
        self.config_error: dict | None = None
        self.no_devices = False
        self.state = "starting"
        self.restarts = 0       # restarts after failures (elastic's count); membership changes do not count
        self._why = "start"     # why the next round starts
        self._exited: dict[int, tuple[int, int]] = {}  # local rank -> (monitor tick first seen, exit code)
        self._tick = 0
        self._stderrs: dict[int, str] = {}

    # --- the workers' environment --------------------------------------------------------------------------
    def worker_env(self, local_rank: int) -> dict[str, str]:
        L = self.launch
        r = self.live[local_rank]
        env = {"HAL_VISIBLE_DEVICES": r.name, "HAL_LAUNCH_DEVICE": r.name,
               "HAL_LAUNCH_NODE_RANK": str(L.node_rank), "HAL_LAUNCH_LOCAL_INDEX": str(r.local_index),
               "HAL_LAUNCH_DEVICES": ",".join(x.name for x in self.live),
               "HAL_LAUNCH_LOST": ",".join(x["device"] for x in self.lost),
               "HAL_LAUNCH_RUN_DIR": str(L.run_dir), "HAL_LAUNCH_NNODES": L.nnodes}
        if L.plan_path:
            env["HAL_LAUNCH_PLAN"] = L.plan_path
        if L.cluster_path:
            env["HAL_LAUNCH_CLUSTER"] = L.cluster_path
        return env

    def _set_local_rank_env(self, worker_env, local_rank, spec):
        super()._set_local_rank_env(worker_env, local_rank, spec)
        worker_env.update(self.worker_env(local_rank))

    # --- rounds --------------------------------------------------------------------------------------------
    def _start_workers(self, worker_group):
        spec = worker_group.spec
        restart = spec.max_restarts - self._remaining_restarts
        self._exited, self._tick = {}, 0
        self.rounds.append({
            "restart": restart, "reason": self._why,
            "world_size": worker_group.workers[0].world_size if worker_group.workers else 0,
            "group_rank": worker_group.group_rank, "group_world_size": worker_group.group_world_size,
            "devices": [r.name for r in self.live],
            "ranks": [{"rank": w.global_rank, "local_rank": w.local_rank, "device": self.live[w.local_rank].name,
                       "kind": self.live[w.local_rank].kind} for w in worker_group.workers]})
        self.state = "running"
        self._why = "membership change"  # unless a failure says otherwise
        self.write_record()
        pids = super()._start_workers(worker_group)
        self._stderrs = dict(getattr(self._pcontext, "stderrs", {}) or {})
        return pids

    def _restart_workers(self, worker_group):
        if not self.live:  # not reached: a failure that leaves no device stops the restarts
            raise RuntimeError("no device left")
        if self._why == "membership change":
            say(f"node {self.launch.node_rank}: another node (re)joined the rendezvous; restarting the workers "
                f"(not counted as a restart)")
        super()._restart_workers(worker_group)

    def _monitor_workers(self, worker_group):
        self._tick += 1
        for lr, h in (getattr(self._pcontext, "subprocess_handlers", None) or {}).items():
            if lr not in self._exited:
                code = h.proc.poll()
                if code is not None:
                    self._exited[lr] = (self._tick, code)
        result = super()._monitor_workers(worker_group)
        if result.state == WorkerState.FAILED and result.failures:
            self._on_failure(worker_group, result)
        return result

    def _root_cause(self, failures: dict):
        """(global rank, failure) of the round's first failure. Elastic's timestamps are whole seconds, so the
        order is first the monitor tick in which this agent saw the process gone (those elastic stopped after
        the first failure were still running then), then the timestamp, then the likelier cause: a device
        loss, a configuration exit or SIGKILL before other signals before other exit codes."""
        def key(item):
            rank, f = item
            seen = self._exited.get(f.local_rank)
            code = f.exitcode
            likely = 0 if code in (EXIT_DEVICE_LOST, EXIT_CONFIG, -signal.SIGKILL) else 1 if code < 0 else 2
            return (seen[0] if seen else float("inf"), code == -signal.SIGTERM and not seen, f.timestamp,
                    likely, f.local_rank)
        return min(failures.items(), key=key)

    def _on_failure(self, worker_group, result) -> None:
        L = self.launch
        spec = worker_group.spec
        rank, f = self._root_cause(result.failures)
        lr = f.local_rank
        rec = self.live[lr]
        code = f.exitcode
        what = f"node {L.node_rank}: rank {rank} ({rec.name}, {rec.kind}) {_describe(code)}"
        restart_no = spec.max_restarts - self._remaining_restarts + 1
        entry = {"restart": restart_no - 1, "rank": rank, "local_rank": lr, "device": rec.name, "kind": rec.kind,
                 "exitcode": code, "log": self._stderrs.get(lr, ""),
                 "others": {str(r): x.exitcode for r, x in result.failures.items() if r != rank}}
        if code == EXIT_CONFIG:
            msg = f.message.get("message", "") if isinstance(f.message, dict) else str(f.message or "")
            lines = _tail(self._stderrs.get(lr)) or ([msg] if msg and "pytorch.org" not in msg else [])
            self.config_error = {**entry, "stderr": lines}
            self._remaining_restarts = 0
            entry["action"] = "stop"
            say(f"{what}; not restarting")
        else:
            lost = code < 0 or code == EXIT_DEVICE_LOST
            if lost:
                self.live.pop(lr)
                self.lost.append({"device": rec.name, "kind": rec.kind, "local_index": rec.local_index,
                                  "rank": rank, "restart": restart_no - 1, "exitcode": code})
                spec.local_world_size = max(len(self.live), 1)
                what = f"{what}: device lost"
            n = len(self.live)
            if not self.live:
                self.no_devices = True
                self._remaining_restarts = 0
                entry["action"] = "stop"
                say(f"{what}; no device left on this node")
            elif self._remaining_restarts > 0:
                entry["action"] = "restart"
                say(f"{what}; restarting on {n} device{'s' * (n != 1)} (restart {restart_no} of {spec.max_restarts})")
            else:
                entry["action"] = "stop"
                say(f"{what}; no restarts left ({spec.max_restarts} of {spec.max_restarts} used)")
        if entry["action"] == "restart":
            self.restarts += 1
            self._why = "lost device" if code < 0 or code == EXIT_DEVICE_LOST else "failure"
        self.failures.append(entry)
        self.write_record()

    # --- RUN_DIR/launch.json ---------------------------------------------------------------------------------
    def record_path(self) -> Path:
        L = self.launch
        return L.run_dir / ("launch.json" if L.node_rank == 0 else f"launch.node{L.node_rank}.json")

    def write_record(self, **extra) -> None:
        L = self.launch
        data = {"node_rank": L.node_rank, "nnodes": L.nnodes, "run_dir": str(L.run_dir),
                "log_dir": str(L.log_dir / f"node{L.node_rank}") if L.log_dir else "",
                "state": self.state, "devices": [r.to_dict() for r in self.selected],
                "live": [r.name for r in self.live], "lost": self.lost,
                "restarts": self.restarts, "max_restarts": self.launch.max_restarts,
                "rounds": self.rounds, "failures": self.failures, "updated": time.time(), **extra}
        path = self.record_path()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def run(L: LaunchSpec) -> int:
    """Runs the job on this node; returns the launcher's exit code (0, 1, or 2 for a worker's EXIT_CONFIG)."""
    L.run_dir.mkdir(parents=True, exist_ok=True)
    log_dir = L.log_dir or (L.run_dir / "logs")
    L.log_dir = log_dir
    # Each round's workers get a store of their own (rank 0 of the round hosts it, on a fresh port). Sharing the
    # rendezvous' store, torch 2.13 gives the workers of every round the same unprefixed keys: a restarted
    # group reads the dead round's Gloo addresses and fails to connect ("Connection refused").
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    try:
        params = RendezvousParameters(backend=L.rdzv_backend, endpoint=L.rdzv_endpoint, run_id=L.rdzv_id,
                                      min_nodes=L.min_nodes, max_nodes=L.max_nodes, local_addr=L.local_addr,
                                      **L.rdzv_conf)
        handler = get_rendezvous_handler(params)
    except Exception as e:  # noqa: BLE001 — elastic raises ValueError, RendezvousError, RuntimeError...
        say(f"error: rendezvous ({L.rdzv_backend} at {L.rdzv_endpoint}): {e}")
        return 2
    spec = WorkerSpec(role="worker", local_world_size=len(L.records), rdzv_handler=handler,
                      entrypoint=L.entrypoint, args=L.args, max_restarts=L.max_restarts,
                      monitor_interval=L.monitor_interval, local_addr=L.local_addr)
    agent = HalAgent(spec, NodeLogs(log_dir, L.node_rank), L,
                     log_line_prefix_template=f"[node{L.node_rank} rank${{rank}}]:")
    names = ", ".join(f"{r.name} ({r.kind})" for r in L.records)
    say(f"node {L.node_rank}: {len(L.records)} worker{'s' * (len(L.records) != 1)} on {names}; "
        f"run dir {L.run_dir}, logs {log_dir / f'node{L.node_rank}'}")
    code = 1
    try:
        result = agent.run()
    except (SignalException, KeyboardInterrupt) as e:  # elastic has stopped the workers
        sig = e.sigval if isinstance(e, SignalException) else signal.SIGINT
        agent.state = "stopped"
        say(f"node {L.node_rank}: stopped by {sig.name}; workers stopped")
        agent.write_record(exit_code=128 + int(sig))
        return 128 + int(sig)
    except Exception as e:  # noqa: BLE001 — rendezvous timeouts, a closed rendezvous, elastic's own errors
        agent.state = "error"
        if isinstance(e, RendezvousTimeoutError):
            msg = (f"the rendezvous at {L.rdzv_endpoint} ({L.rdzv_backend}, id {L.rdzv_id!r}) did not gather "
                   f"--nnodes {L.nnodes} node(s) within join_timeout = {L.rdzv_conf.get('join_timeout', 600)} s"
                   + (f": {e}" if str(e) else ""))
        else:
            msg = f"{type(e).__name__}: {e}"
        say(f"error: node {L.node_rank}: {msg}")
        agent.write_record(error=msg)
        return 1
    if result is None:  # the rendezvous was closed: the job ended elsewhere
        agent.state = "closed"
        code = 0
    elif result.state == WorkerState.SUCCEEDED:
        agent.state = "succeeded"
        code = 0
        say(f"node {L.node_rank}: done (restarts: {agent.restarts}"
            + (f"; lost: {', '.join(x['device'] for x in agent.lost)})" if agent.lost else ")"))
    elif agent.config_error is not None:
        agent.state = "config_error"
        c = agent.config_error
        say(f"error: node {L.node_rank}: rank {c['rank']} ({c['device']}) stopped the job with a configuration "
            f"error (exit {EXIT_CONFIG}); its log: {c['log'] or 'none'}")
        for line in c["stderr"]:
            print(f"  {line}", file=sys.stderr)
        code = 2
    elif agent.no_devices:
        agent.state = "no_devices"
        say(f"error: node {L.node_rank}: no device left (lost: {', '.join(x['device'] for x in agent.lost)})")
        code = 1
    else:
        agent.state = "failed"
        seen = [(r, f) for r, f in result.failures.items() if f.local_rank in agent._exited]
        failed = sorted(seen or result.failures.items())
        last = agent.restarts
        attempt = agent.rounds[-1]["restart"] if agent.rounds else 0
        say(f"error: node {L.node_rank}: failed after {last} restart{'s' * (last != 1)}: "
            + "; ".join(f"rank {r} {_describe(f.exitcode)}" for r, f in failed)
            + f"; logs: {log_dir / f'node{L.node_rank}' / f'attempt_{attempt}'}")
        code = 1
    agent.write_record(exit_code=code)
    return code
