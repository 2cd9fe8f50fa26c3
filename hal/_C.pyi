"""Type stubs of hal._C, the compiled core of HAL (csrc/python/). Private: use the `hal` package.

The module is a thin binding of the C++ runtime in csrc/runtime/: no logic lives here, every function
converts its arguments and forwards. Blocking calls (synchronize, copies, allocation) release the GIL.

Pointers are plain ints (device addresses). Unless a device is host-addressable, never dereference them on
the host: reach device memory through Stream copies or Device.map.

Asynchrony: copies are queued on a stream and return at once. The CALLER keeps every host buffer passed to
a copy alive and unchanged (and does not read a destination buffer) until the copy completed, i.e. until
the stream, or an Event recorded after the copy, was synchronized. _C does not keep buffers alive.
"""

from typing import Any, Callable, Optional

from typing_extensions import Buffer

ABI_VERSION: tuple[int, int]
"""The plugin ABI version (major, minor) this runtime was built against."""

# --- Exceptions ---------------------------------------------------------------------------------------

class HalError(RuntimeError):
    """Every error of the runtime. Attributes: code (str, e.g. "HAL_STATUS_OUT_OF_MEMORY"), plugin (str),
    device (str, e.g. "emu:1"; "" when none), native_code (int, the plugin's own code or 0)."""
    code: str
    plugin: str
    device: str
    native_code: int

class PluginLoadError(HalError):
    """A plugin could not be loaded (raised by explicit loading; init records these in load_errors())."""

class Unimplemented(HalError):
    """HAL_STATUS_UNIMPLEMENTED: the plugin or device does not support the operation
    (e.g. "plugin 'x' does not support memory_map")."""

class OutOfMemory(HalError, MemoryError):
    """HAL_STATUS_OUT_OF_MEMORY, after the caching allocator emptied its cache and retried once. The
    message names the device, bytes requested, in use, cached and the capacity."""

class InvalidArgument(HalError, ValueError):
    """HAL_STATUS_INVALID_ARGUMENT: bad index, unknown device name or pointer, bad options."""

class DeviceError(HalError):
    """HAL_STATUS_DEVICE_ERROR (also INTERNAL, UNAVAILABLE): the device or its driver failed."""

class Timeout(HalError, TimeoutError):
    """HAL_STATUS_TIMEOUT: a blocking operation ran past its deadline."""

class Aborted(HalError):
    """HAL_STATUS_ABORTED: the operation was cancelled."""

# --- Runtime ------------------------------------------------------------------------------------------

def init(
    plugin_paths: list[str] = [],
    plugin_dirs: list[str] = [],
    use_env: bool = True,
    configs: dict[str, str] = {},
) -> None:
    """Loads plugins and enumerates devices, once per process.

    Order (also of the device indices): plugin_dirs (scanned for libhal_plugin_*.so, libhal_plugin_cpu.so
    first), then env HAL_PLUGIN_PATH when use_env (colon-separated files or directories, scanned the same
    way; empty elements ignored), then plugin_paths (files; relative paths resolve against the cwd). The current directory is
    never searched implicitly. configs maps a plugin name to its config string (env
    HAL_PLUGIN_CONFIG_<NAME> overrides it when use_env). A broken plugin is recorded in load_errors() and
    the others still load; a second plugin with an already loaded name is a load error naming both paths.
    When use_env, HAL_VISIBLE_DEVICES ("cpu:0,emu:1" or "emu") filters and orders the devices.

    Calling init again with the same arguments does nothing; with different ones raises InvalidArgument.
    Raises InvalidArgument for an unknown name in HAL_VISIBLE_DEVICES (the runtime stays uninitialized).
    """

def is_initialized() -> bool: ...
def _shutdown() -> None:
    """Closes the runtime (registered with atexit by the module itself): afterwards every device call raises
    DeviceError (UNAVAILABLE, "shut down") and frees are no-ops. It neither waits for queued work nor tears
    streams, memory or plugins down (another thread may still be using them): the OS reclaims them. In a
    child forked after init it does nothing (devices there raise DeviceError naming fork and the 'spawn' /
    'forkserver' start methods)."""
def _keep_until_exit(obj: object) -> None:
    """Keeps `obj` alive until the process ends (host memory of copies still queued at exit)."""
def plugin_entries() -> list[tuple[str, bool]]:
    """Every entry of the loader's plugin table, in table order: (name, required). The one list of them."""

class PluginInfo:
    """What a plugin declares. For inspect_plugin() on a refused file, `error` says why and the fields
    that could not be read are empty/0."""
    name: str
    path: str
    version: str
    abi_major: int
    abi_minor: int
    device_count: int
    """Number of devices; -1 from inspect_plugin (which does not initialize the plugin)."""
    entries: dict[str, bool]
    """Every entry of the loader's table (in table order) -> present in the plugin."""
    extensions: list[tuple[str, int]]
    """The plugin's extension chain (ABI 1.2, extension.h) as (name, version); empty before 1.2."""
    error: Optional[str]

class Link:
    """One link of a device ("hal.topology" extension, topology.h)."""
    peer: str  # the peer's device name, or "host"
    peer_index: int  # its global index; -1 for the host
    kind: str  # "same_memory", "pcie", "fabric", "host_staged", "network", "other"
    peer_access: bool  # peer copies are direct (HAL_LINK_FLAG_PEER_ACCESS)
    bandwidth: float  # bytes/s, device -> peer; 0 = unknown
    latency: float  # seconds; 0 = unknown

def plugins() -> list[PluginInfo]:
    """The loaded plugins, in load order. Raises DeviceError if init has not run."""

def load_errors() -> list[tuple[str, str]]:
    """(path, message) of every plugin that could not be loaded, in discovery order."""

def inspect_plugin(path: str) -> PluginInfo:
    """Reads a plugin's table WITHOUT initializing it (for `hal info`); never raises for a bad plugin:
    `.error` holds the reason it would be refused. Does not need init."""

def validation_enabled() -> bool:
    """Whether HAL_VALIDATE turned the validation layer on (read once, when the first plugin loads)."""

def validation_report() -> list[dict[str, Any]]:
    """One report per validated plugin (empty when the layer is off): plugin, calls, violations,
    first_violation (its message, or ""), leaks (one line per live allocation that no caching allocator holds),
    leaked_bytes, live (other live objects, held by the runtime or by objects alive now), text (as printed at
    exit). Also printed to stderr when the runtime shuts down at exit."""

def device_count() -> int:
    """Number of visible devices; 0 (never raises) when not initialized."""

def get_device(index: int) -> Device:
    """The device with global index `index`; InvalidArgument when out of range."""

def find_device(name: str) -> Device:
    """The device named e.g. "emu:1"; InvalidArgument listing the available names when unknown."""

# --- Devices ------------------------------------------------------------------------------------------

class DeviceProperties:
    name: str
    vendor: str
    kind: str
    """"cpu", "gpu", "npu" or "other"."""
    flags: int
    host_addressable: bool
    emulated: bool
    """The figures describe a software emulation: every UI must label such a device as emulated."""
    mappable: bool
    total_memory: int
    peak_flops: dict[str, float]
    """FLOP/s by dtype ("f32","f16","bf16","f64","f8e4m3","i8","u8","i32","i64"); only known ones."""
    memory_bandwidth: float
    """Bytes/s; 0 = unknown (same for the two below)."""
    link_bandwidth: float
    host_link_bandwidth: float
    relative_speed: float
    """Speed relative to the host it is emulated on (emulated devices); 0 otherwise."""

class Device:
    """One device. Devices live as long as the process; equal devices are the same object. Its waits
    (synchronize here, on streams and events) are interrupted by Ctrl-C on the main thread: they raise
    KeyboardInterrupt and the work stays queued."""
    index: int
    name: str
    """"<plugin>:<local index>", e.g. "emu:1"."""
    plugin: str
    plugin_path: str
    local_index: int
    def properties(self) -> DeviceProperties: ...
    def links(self) -> Optional[list[Link]]:
        """The device's links from its plugin's "hal.topology" extension; None when the plugin has none."""
    def extensions(self) -> list[tuple[str, int]]:
        """(name, version) of every extension of the device's plugin (ABI 1.2)."""
    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes as the plugin reports them."""
    def supports(self, entry: str) -> bool:
        """Whether the plugin has the ABI entry `entry` (e.g. "memory_map", "launch_host_func")."""
    def default_stream(self) -> Stream: ...
    def current_stream(self) -> Stream:
        """The calling thread's current stream on this device (the default stream unless set). One per thread and
        device for the whole process: the torch bridge reads and sets the same one (torch.hal.current_stream)."""
    def exchange_current_stream(self, stream: Stream) -> Stream:
        """Makes `stream` (of this device) the calling thread's current stream here; returns the previous one."""
    def stream(self, handle: int) -> Stream:
        """The live stream with this handle (Stream.handle; 0 is the default stream). Raises
        InvalidArgument when the device has no such stream (never created, or destroyed when its last
        reference went). torch's hal streams use the same handles."""
    def synchronize(self) -> None:
        """Waits for every live stream of this device; raises the first sticky error."""
    def allocate(self, nbytes: int, stream: Optional[Stream] = None) -> Allocation:
        """Memory from the device's caching allocator, usable on `stream` (default: the default stream).
        nbytes == 0 gives ptr 0. Raises OutOfMemory (also, without asking the plugin, for sizes near 2**63
        and above, which no size arithmetic could hold)."""
    def memory_stats(self) -> dict[str, int]:
        """allocated_bytes, allocated_bytes_peak, reserved_bytes, reserved_bytes_peak, active_blocks,
        allocated_blocks, segments (current values), num_allocs, num_frees, num_raw_allocs, num_raw_frees,
        num_ooms, num_cache_hits, num_alloc_retries (counters, see reset_accumulated_memory_stats)."""
    def reset_peak_memory_stats(self) -> None: ...
    def reset_accumulated_memory_stats(self) -> None:
        """Sets the counters (num_*) to 0; current values and peaks stay."""
    def find_allocation(self, ptr: int) -> Optional[tuple[int, int]]:
        """(start, rounded size) of the live allocation containing `ptr` (its start or any address inside
        it), or None. Linear in the number of blocks for an interior pointer: for rare queries."""
    def empty_cache(self) -> None:
        """Synchronizes the device and releases every fully free cached segment to the plugin."""
    def raw_allocate(self, nbytes: int) -> int:
        """Plugin memory_allocate directly, bypassing the cache (benchmarks). Free with raw_free."""
    def raw_free(self, ptr: int) -> None: ...
    def _raw_call(self, entry: str, args: list[int] = ..., local: Optional[int] = None) -> int:
        """Test hook of the validation layer: one plugin entry (stream_create, stream_destroy, stream_synchronize,
        event_create, event_destroy, event_record, memory_allocate, memory_free) with raw handles, past the
        runtime's bookkeeping. Returns the new handle or pointer of a create entry, else 0."""
    def map(self, ptr: int, nbytes: int) -> int:
        """Host address aliasing device memory (memory_map); Unimplemented when unsupported."""
    def unmap(self, host_ptr: int, nbytes: int) -> None: ...

class Allocation:
    """A block from a device's caching allocator; freed by free() or when garbage collected."""
    ptr: int
    """Raises InvalidArgument once freed (a use after free)."""
    nbytes: int
    freed: bool
    device: Device
    stream: Stream
    """The stream it was allocated on (kept alive by the allocation)."""
    def free(self) -> None:
        """Returns the block to the cache. Idempotent."""
    def record_stream(self, stream: Stream) -> None:
        """Marks the block as used by `stream`: after free() it is reused only once `stream` has passed
        the point of the free (also when `stream` is destroyed first). InvalidArgument once freed."""

# --- Streams and events -------------------------------------------------------------------------------

class Stream:
    """An in-order work queue of a device. Stream(device) creates a new stream, destroyed (after its queued
    work) when the last reference goes: Stream objects, a thread's current stream, an Allocation made on
    it. Handles are never reused. Equal and hashable by (device, handle)."""
    def __init__(self, device: Device) -> None: ...
    device: Device
    handle: int
    """Stable id within the device; 0 is the default stream (what torch stores as a StreamId)."""
    def synchronize(self) -> None: ...
    def query(self) -> bool:
        """True when all queued work has completed."""
    def wait_event(self, event: Event) -> None: ...
    def copy_h2d(self, dst_ptr: int, src: Buffer, nbytes: Optional[int] = None) -> None:
        """Queues a copy from the C-contiguous host buffer `src` (all of it, or its first nbytes).
        Keep `src` alive and unchanged until the stream passed the copy."""
    def copy_d2h(self, dst: Buffer, src_ptr: int, nbytes: Optional[int] = None) -> None:
        """Queues a copy into the writable C-contiguous buffer `dst`. Read `dst` only after a sync."""
    def copy_d2d(self, dst_ptr: int, src_ptr: int, nbytes: int) -> None: ...
    def memset(self, dst_ptr: int, value: int, nbytes: int) -> None:
        """Queued memset_async, or (plugin without it) a synchronous copy of a filled host buffer."""
    def launch_host_func(self, fn: Callable[[], None]) -> None:
        """Runs fn (with the GIL) on a plugin thread after the queued work. Unimplemented when the plugin
        lacks launch_host_func. fn must not synchronize this stream; exceptions it raises are printed and
        dropped."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def copy_peer(dst_stream: Stream, dst_ptr: int, src_stream: Stream, src_ptr: int, nbytes: int) -> None:
    """Copies between any two devices: d2d on one device, the plugin's peer copy within one plugin (both
    queued on dst_stream after it waited for src_stream), or else staged through host memory in chunks
    (returns when complete). Later work on dst_stream sees the data."""

class Event:
    """A point in a stream. With timing=True elapsed_time works on it."""
    def __init__(self, device: Device, timing: bool = True) -> None: ...
    device: Device
    def record(self, stream: Stream) -> None: ...
    def synchronize(self) -> None: ...
    def query(self) -> bool: ...
    def elapsed_time(self, end: Event) -> float:
        """Milliseconds between this event's completion and `end`'s."""

# --- Collectives (csrc/runtime/communicator.h) -------------------------------------------------------------

def comm_unique_id(device: Device) -> bytes:
    """128 bytes naming a new clique of `device`'s plugin, to share with the other ranks out of band (a
    store). Raises Unimplemented when the plugin has no collectives."""

class Communicator:
    """One rank of a clique of one plugin's devices: the plugin's native collective library.

    The constructor blocks (GIL released) until all `nranks` joined, or raises Timeout after `timeout_ms`
    (0: the plugin's default, at least 60 s), naming the missing ranks. Every operation is queued on `stream`
    (of this communicator's device) and returns at once, like a copy; pointers are device pointers, counts
    are elements, dtype is one of "f32", "f16", "bf16", "f64", "f8e4m3", "i8", "u8", "i32", "i64" and op one of
    "sum", "prod", "min", "max", "avg". Bad arguments raise InvalidArgument at the call; a collective that
    fails later (a peer timed out or died, abort) fails its stream: the next synchronize raises Timeout,
    Aborted or DeviceError naming the op, this rank and the peer. All ranks issue the same collectives in the
    same order."""
    def __init__(self, device: Device, nranks: int, unique_id: bytes, rank: int, timeout_ms: int = 0) -> None: ...
    rank: int
    nranks: int
    device: Device
    def supports(self, op: str) -> bool:
        """Whether the plugin has "allreduce" (always), "allgather", "reduce_scatter", "broadcast", "send" or
        "recv"."""
    def allreduce(self, send_ptr: int, recv_ptr: int, count: int, dtype: str, op: str, stream: Stream) -> None: ...
    def allgather(self, send_ptr: int, recv_ptr: int, send_count: int, dtype: str, stream: Stream) -> None:
        """recv holds nranks * send_count elements, in rank order."""
    def reduce_scatter(self, send_ptr: int, recv_ptr: int, recv_count: int, dtype: str, op: str,
                       stream: Stream) -> None:
        """send holds nranks * recv_count elements; rank r receives block r of the reduction."""
    def broadcast(self, send_ptr: int, recv_ptr: int, count: int, dtype: str, root: int, stream: Stream) -> None: ...
    def send(self, send_ptr: int, count: int, dtype: str, peer: int, stream: Stream) -> None: ...
    def recv(self, recv_ptr: int, count: int, dtype: str, peer: int, stream: Stream) -> None: ...
    def abort(self) -> None:
        """Fails queued and running collectives (Aborted), here and promptly on the peers. Any thread, also
        while another waits on the stream."""
    def destroy(self) -> None:
        """Idempotent; also on garbage collection. Lets queued collectives finish (GIL released)."""

# --- Benchmark hooks ------------------------------------------------------------------------------------

def _bench_alloc_pairs(device: Device, nbytes: int, iters: int, raw: bool = False) -> float:
    """Seconds for `iters` allocate+free pairs in a C++ loop: through the cache, or raw plugin calls."""
