"""What a conformance test is (`Case`), the areas they belong to, and the context each runs in (`Context`).

A test is a function of a `Context`, registered with `@case(AREA)`. It passes by returning; it fails by
raising anything (an AssertionError's text is the reason); it raises `Unsupported` when the plugin leaves out
an optional entry or feature the test needs (naming it), and `Skip` when the test cannot say anything here
(no device, the plugin did not initialize). Everything a test creates through the context (allocations,
streams, events, host memory) is released after it, whatever its outcome.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from hal.conformance.abi import ffi as abi
from hal.conformance.abi.ffi import ffi


class Unsupported(Exception):
    """The plugin does not provide what the test needs (an optional entry, a feature): not a failure."""


class Skip(Exception):
    """The test cannot run here (no device, no second device, the plugin did not initialize)."""


@dataclass(frozen=True)
class Area:
    name: str
    required: bool  # A required area's failure fails the run; so does an optional one's whose entries exist.
    entries: tuple[str, ...] = ()  # An optional area tests these; when the table has none, it is unsupported.
    doc: str = ""


# In the order they run: loading first (it initializes the plugin), threading and collectives last.
AREAS = {a.name: a for a in [
    Area("loading", True, doc="the table: versions, struct_size, required entries, groups; initialize; devices"),
    Area("properties", True, doc="device_get_properties and device_get_memory_info, the struct_size protocol"),
    Area("memory", True, doc="allocate / free: alignment, sizes, capacity, leaks seen through memory_info"),
    Area("copies", True, doc="h2d, d2h, d2d with offsets and sizes from 0 bytes up; memset and peer if present"),
    Area("streams", True, doc="ordering, query, synchronize waits for running work, destroy waits"),
    Area("events", True, doc="record / query / synchronize, elapsed_time against wall time, cross-stream waits"),
    Area("errors", True, doc="invalid arguments the ABI says are detected, get_last_error, sticky async errors"),
    Area("pinned", False, ("host_allocate", "host_free"), doc="pinned host memory"),
    Area("kernels", False, ("op_list", "op_launch", "program_create"), doc="declared operators, a launch"),
    Area("threading", True, doc="concurrent calls from many threads, repeated for racy faults"),
    Area("collectives", False, ("comm_get_unique_id",), doc="communicators of several processes"),
]}


@dataclass
class Case:
    area: str
    name: str
    fn: Callable[["Context"], None]
    doc: str
    device: bool  # Needs an initialized plugin with at least one device.

    @property
    def id(self) -> str:
        return f"{self.area}.{self.name}"


CASES: dict[str, Case] = {}
_ABANDONED: list = []  # Host buffers a faulty plugin may still write (Context.abandon).


def case(area: str, *, device: bool = True):
    """Registers the decorated function as a test of `area`, named like the function without `test_`."""
    assert area in AREAS, area

    def register(fn):
        name = fn.__name__.removeprefix("test_")
        c = Case(area, name, fn, (fn.__doc__ or "").strip().split("\n")[0], device)
        CASES[c.id] = c
        return fn

    return register


def require(ctx: "Context", *entries: str) -> None:
    """Raises Unsupported naming the first optional entry the table lacks."""
    for entry in entries:
        if not ctx.p.has(entry):
            raise Unsupported(f"the plugin has no {entry} (optional)")


@dataclass
class Context:
    """The plugin under test and what one test made with it (released by `cleanup`)."""

    p: abi.Plugin
    config: str | None
    device: int = 0
    count: int = 0
    initialized: bool | None = False  # None: initialize failed, or HAL's loader would refuse the table.
    timeout: float = 30.0  # Each test's timeout in the runner (tests that wait on purpose stay well below).
    _allocations: list = field(default_factory=list)
    _host: list = field(default_factory=list)
    _streams: list = field(default_factory=list)
    _events: list = field(default_factory=list)
    _keep: list = field(default_factory=list)

    # --- Resources released after the test ---
    def alloc(self, size: int, device: int | None = None):
        device = self.device if device is None else device
        ptr = self.p.allocate(device, size)
        self._allocations.append((device, ptr))
        return ptr

    def free(self, ptr, device: int | None = None) -> None:
        device = self.device if device is None else device
        self._allocations.remove((device, ptr))
        self.p.free(device, ptr)

    def abandon(self, ptr, *host_buffers) -> None:
        """Leaves allocation `ptr` unreleased and `host_buffers` alive for good: the plugin may still be using
        them (a stream_destroy that returned before its work ran), and freeing them under that work could
        crash the run."""
        self._allocations.remove((self.device, ptr))
        _ABANDONED.extend(host_buffers)
        _ABANDONED.extend(self._keep)  # Host functions still queued.

    def host_alloc(self, size: int):
        out = ffi.new("void**")
        self.p.check(self.p.api.host_allocate(size, out), "host_allocate")
        self._host.append(out[0])
        return out[0]

    def stream(self, device: int | None = None):
        s = self.p.stream(self.device if device is None else device)
        self._streams.append(s)
        return s

    def destroy_stream(self, s) -> None:
        self._streams.remove(s)
        self.p.check(self.p.api.stream_destroy(s), "stream_destroy")

    def event(self, flags: int = 0, device: int | None = None):
        e = self.p.event(self.device if device is None else device, flags)
        self._events.append(e)
        return e

    def cleanup(self) -> list[str]:
        """Releases what the test made; returns what failed (the runner reports it with the test)."""
        problems = []
        api = self.p.api
        for s in self._streams:
            api.stream_synchronize(s)  # A sticky error a test left behind is no cleanup problem.
        for e in self._events:
            if (st := api.event_destroy(e)) != abi.OK:
                problems.append(f"event_destroy: {abi.status_name(st)}")
        for s in self._streams:
            if (st := api.stream_destroy(s)) != abi.OK:
                problems.append(f"stream_destroy: {abi.status_name(st)}")
        for device, ptr in self._allocations:
            if (st := api.memory_free(device, ptr)) != abi.OK:
                problems.append(f"memory_free: {abi.status_name(st)} {self.p.last_error()}")
        for ptr in self._host:
            api.host_free(ptr)
        self._allocations, self._host, self._streams, self._events, self._keep = [], [], [], [], []
        return problems

    # --- Copies, synchronized ---
    def write(self, ptr, data: bytes, stream=None) -> None:
        s = stream if stream is not None else self.stream()
        buf = ffi.from_buffer(data)
        self.p.check(self.p.api.memcpy_h2d_async(s, ptr, buf, len(data)), "memcpy_h2d_async")
        self.p.check(self.p.api.stream_synchronize(s), "stream_synchronize")

    def read(self, ptr, size: int, stream=None) -> bytes:
        s = stream if stream is not None else self.stream()
        out = bytearray(b"\xcd" * size)
        self.p.check(self.p.api.memcpy_d2h_async(s, ffi.from_buffer(out), ptr, size), "memcpy_d2h_async")
        self.p.check(self.p.api.stream_synchronize(s), "stream_synchronize")
        return bytes(out)

    def sync(self, s) -> None:
        self.p.check(self.p.api.stream_synchronize(s), "stream_synchronize")

    # --- Host functions: known work on a stream ---
    def host_func(self, s, fn: Callable[[], None]) -> None:
        """Queues `fn` on stream `s` with launch_host_func (Unsupported without it)."""
        require(self, "launch_host_func")
        def call(_):
            fn()

        cb = ffi.callback("void(void*)", call)
        self._keep.append(cb)  # cffi callbacks must outlive their calls.
        self.p.check(self.p.api.launch_host_func(s, cb, ffi.NULL), "launch_host_func")

    def gate(self, s, limit: float = 10.0) -> threading.Event:
        """Queues a host function that holds `s` until the returned event is set (or `limit` seconds pass)."""
        opened = threading.Event()
        self.host_func(s, lambda: opened.wait(limit))
        return opened

    def sleeper(self, s, seconds: float) -> dict:
        """Queues a host function that sleeps `seconds`; the dict says when it started and ended."""
        times: dict = {}

        def sleep():
            times["start"] = time.monotonic()
            time.sleep(seconds)
            times["end"] = time.monotonic()

        self.host_func(s, sleep)
        return times

    # --- Figures of the device under test ---
    def properties(self, device: int | None = None):
        return self.p.properties(self.device if device is None else device)

    def is_host_memory(self) -> bool:
        """A host device (host-addressable, kind cpu) whose capacity is the machine's RAM, not a limit of its
        own (cpu without mem=): its memory_info moves with every process, and asking for more may succeed."""
        props = self.properties()
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return (bool(props.flags & abi.FLAG_HOST_ADDRESSABLE) and props.kind == abi.KIND_CPU
                and props.total_memory_bytes >= ram // 2)


def expect_status(ctx: Context, got: int, want: int | tuple, what: str) -> None:
    """Asserts that a call returned `want`; the message names the call and what came back."""
    wants = want if isinstance(want, tuple) else (want,)
    if got not in wants:
        message = ctx.p.last_error() if got != abi.OK else ""
        detail = f" ({message})" if message else ""
        raise AssertionError(f"{what}: returned {abi.status_name(got)}{detail}, the ABI says "
                             f"{' or '.join(abi.status_name(w) for w in wants)}")


def deadline_loop(seconds: float):
    """Yields until `seconds` have passed: for polling a query without a timed assertion."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
        time.sleep(0.002)


def loader_refusal(p: abi.Plugin) -> str | None:
    """Why HAL's loader would refuse the table (plugin.h: versioning, required entries, groups), or None."""
    t = p.raw
    if t.abi_major != abi.ABI_MAJOR:
        return f"ABI {t.abi_major}.{t.abi_minor}, not major {abi.ABI_MAJOR}"
    if t.struct_size < abi.ffi.offsetof("hal_plugin_api_t", "host_allocate"):
        return f"struct_size {t.struct_size} ends before the required entries do"
    missing = [e for e in abi.REQUIRED_ENTRIES if not p.has(e)]
    if missing:
        return f"required entries are NULL: {', '.join(missing)}"
    half = [g for g, entries in abi.GROUPS.items() if 0 < sum(p.has(e) for e in entries) < len(entries)]
    if half:
        return f"half a group of entries: {', '.join(half)}"
    return None


def ready(ctx: Context) -> None:
    """Initializes the plugin once (if the loading area did not) and checks that device `ctx.device` exists."""
    p = ctx.p
    if ctx.initialized is None:
        raise Skip("the plugin is not usable (see the loading area)")
    if not ctx.initialized:
        refusal = loader_refusal(p)
        if refusal:
            ctx.initialized = None
            raise Skip(f"HAL's loader refuses this plugin ({refusal}): see the loading area")
        status = p.initialize(ctx.config)
        if status != abi.OK:
            ctx.initialized = None
            raise Skip(f"the plugin did not initialize: {abi.status_name(status)} {p.last_error()}")
        ctx.initialized = True
        ctx.count = p.device_count()
    if ctx.count == 0:
        raise Unsupported("no device: device_count is 0")
    if ctx.device >= ctx.count:
        raise Skip(f"no device {ctx.device}: the plugin has {ctx.count}")
