"""The plugin ABI (csrc/include/hal/*.h, v1.2) as a cffi declaration, and a plugin loaded through it.

This is how `hal conformance` drives a plugin: its table, called directly, with no HAL runtime in between.
The declaration is written by hand from the headers; tests/conformance/test_abi_cdef.py compiles the headers
and checks every size and field offset below against them, so the two cannot drift apart.

Every call a conformance test makes goes through `Plugin.api`, which records the entry in flight before it
calls it (`Plugin.in_flight`); the suite's runner reads that record when a test hangs, to name the entry.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import cffi

__all__ = ["ffi", "addr", "at", "Plugin", "HalError", "MissingEntry", "REQUIRED_ENTRIES", "OPTIONAL_ENTRIES", "GROUPS",
           "status_name"]

ffi = cffi.FFI()
ffi.cdef(
    """
typedef int32_t hal_status_t;
typedef struct hal_stream_s* hal_stream_t;
typedef struct hal_event_s* hal_event_t;
typedef void (*hal_host_fn)(void* user_data);

typedef struct {
  size_t struct_size;
  uint32_t loader_abi_major;
  uint32_t loader_abi_minor;
  const char* config;
} hal_plugin_init_args_t;

typedef struct {
  size_t struct_size;
  char name[128];
  char vendor[64];
  int32_t kind;
  uint32_t flags;
  uint64_t total_memory_bytes;
  double peak_flops[9];
  double memory_bandwidth;
  double link_bandwidth;
  double host_link_bandwidth;
  double relative_speed;
} hal_device_properties_t;

typedef struct {
  void* data;
  int32_t dtype;
  int32_t ndim;
  const int64_t* sizes;
  const int64_t* strides;
  int64_t offset;
} hal_tensor_t;

typedef struct {
  int32_t kind;
  int32_t reserved;
  union {
    hal_tensor_t tensor;
    int64_t i;
    double f;
    struct { const int64_t* data; uint64_t size; } ints;
    struct { const double* data; uint64_t size; } floats;
    struct { const hal_tensor_t* data; uint64_t size; } tensors;
    const char* string;
    int32_t dtype;
  } u;
} hal_value_t;

typedef struct {
  const char* name;
  uint64_t dtypes;
} hal_op_t;

typedef struct { uint8_t bytes[128]; } hal_comm_unique_id_t;
typedef struct hal_comm_s* hal_comm_t;
typedef struct {
  size_t struct_size;
  uint32_t timeout_ms;
} hal_comm_config_t;

typedef struct hal_program_s* hal_program_t;
typedef struct hal_kernel_s* hal_kernel_t;

typedef struct {
  int32_t kind;
  int32_t reserved;
  uint64_t size;
  const void* value;
} hal_kernel_arg_t;

typedef struct {
  size_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  const char* name;
  const char* version;
  hal_status_t (*initialize)(const hal_plugin_init_args_t*);
  void (*shutdown)(void);
  size_t (*get_last_error)(char*, size_t, int32_t*);
  hal_status_t (*device_count)(int32_t*);
  hal_status_t (*device_get_properties)(int32_t, hal_device_properties_t*);
  hal_status_t (*device_get_memory_info)(int32_t, uint64_t*, uint64_t*);
  hal_status_t (*memory_allocate)(int32_t, uint64_t, void**);
  hal_status_t (*memory_free)(int32_t, void*);
  hal_status_t (*stream_create)(int32_t, hal_stream_t*);
  hal_status_t (*stream_destroy)(hal_stream_t);
  hal_status_t (*stream_synchronize)(hal_stream_t);
  hal_status_t (*stream_query)(hal_stream_t);
  hal_status_t (*stream_wait_event)(hal_stream_t, hal_event_t);
  hal_status_t (*event_create)(int32_t, uint32_t, hal_event_t*);
  hal_status_t (*event_destroy)(hal_event_t);
  hal_status_t (*event_record)(hal_event_t, hal_stream_t);
  hal_status_t (*event_synchronize)(hal_event_t);
  hal_status_t (*event_query)(hal_event_t);
  hal_status_t (*event_elapsed_time)(hal_event_t, hal_event_t, float*);
  hal_status_t (*memcpy_h2d_async)(hal_stream_t, void*, const void*, uint64_t);
  hal_status_t (*memcpy_d2h_async)(hal_stream_t, void*, const void*, uint64_t);
  hal_status_t (*memcpy_d2d_async)(hal_stream_t, void*, const void*, uint64_t);
  hal_status_t (*host_allocate)(uint64_t, void**);
  hal_status_t (*host_free)(void*);
  hal_status_t (*memcpy_peer_async)(hal_stream_t, void*, int32_t, const void*, int32_t, uint64_t);
  hal_status_t (*memset_async)(hal_stream_t, void*, uint8_t, uint64_t);
  hal_status_t (*launch_host_func)(hal_stream_t, hal_host_fn, void*);
  hal_status_t (*memory_map)(int32_t, void*, uint64_t, void**);
  hal_status_t (*memory_unmap)(int32_t, void*, uint64_t);
  hal_status_t (*comm_get_unique_id)(hal_comm_unique_id_t*);
  hal_status_t (*comm_init_rank)(int32_t, int32_t, const hal_comm_unique_id_t*, int32_t, const hal_comm_config_t*,
                                 hal_comm_t*);
  hal_status_t (*comm_destroy)(hal_comm_t);
  hal_status_t (*comm_abort)(hal_comm_t);
  hal_status_t (*allreduce)(hal_comm_t, const void*, void*, uint64_t, int32_t, int32_t, hal_stream_t);
  hal_status_t (*allgather)(hal_comm_t, const void*, void*, uint64_t, int32_t, hal_stream_t);
  hal_status_t (*reduce_scatter)(hal_comm_t, const void*, void*, uint64_t, int32_t, int32_t, hal_stream_t);
  hal_status_t (*broadcast)(hal_comm_t, const void*, void*, uint64_t, int32_t, int32_t, hal_stream_t);
  hal_status_t (*send)(hal_comm_t, const void*, uint64_t, int32_t, int32_t, hal_stream_t);
  hal_status_t (*recv)(hal_comm_t, void*, uint64_t, int32_t, int32_t, hal_stream_t);
  hal_status_t (*op_list)(int32_t, const hal_op_t**, uint64_t*);
  hal_status_t (*op_launch)(hal_stream_t, uint64_t, const hal_value_t*, uint64_t, const hal_tensor_t*, uint64_t);
  hal_status_t (*program_create)(int32_t, const char*, const void*, uint64_t, const char*, hal_program_t*);
  hal_status_t (*program_destroy)(hal_program_t);
  hal_status_t (*kernel_create)(hal_program_t, const char*, hal_kernel_t*);
  hal_status_t (*kernel_destroy)(hal_kernel_t);
  hal_status_t (*kernel_launch)(hal_stream_t, hal_kernel_t, const uint64_t*, const uint64_t*,
                                const hal_kernel_arg_t*, uint64_t);
  const void* extensions;  /* ABI 1.2: the extension chain (extension.h); data, not an entry */
} hal_plugin_api_t;

const hal_plugin_api_t* hal_plugin_get_api(void);
"""
)

OK, NOT_READY, INVALID_ARGUMENT, OUT_OF_MEMORY, UNIMPLEMENTED, DEVICE_ERROR = 0, 1, 2, 3, 4, 5
TIMEOUT, ABORTED, UNAVAILABLE, INTERNAL = 6, 7, 8, 9
STATUS_NAMES = ["OK", "NOT_READY", "INVALID_ARGUMENT", "OUT_OF_MEMORY", "UNIMPLEMENTED", "DEVICE_ERROR",
                "TIMEOUT", "ABORTED", "UNAVAILABLE", "INTERNAL"]
FLAG_HOST_ADDRESSABLE, FLAG_EMULATED, FLAG_MAPPABLE = 1, 2, 4
EVENT_TIMING = 1
KIND_OTHER, KIND_CPU, KIND_GPU, KIND_NPU = 0, 1, 2, 3
DTYPE_F32, DTYPE_I32 = 0, 7
REDUCE_SUM = 0
ABI_MAJOR, ABI_MINOR = 1, 2

_FIELDS = [name for name, _ in ffi.typeof("hal_plugin_api_t").fields]
# plugin.h: every entry up to and including memcpy_d2d_async is required, the rest optional.
REQUIRED_ENTRIES = _FIELDS[_FIELDS.index("initialize"):_FIELDS.index("memcpy_d2d_async") + 1]
OPTIONAL_ENTRIES = [f for f in _FIELDS[_FIELDS.index("memcpy_d2d_async") + 1:] if f != "extensions"]
# Entries a plugin has all of or none of (plugin.h, collective.h, kernel.h).
GROUPS = {
    "pinned": ["host_allocate", "host_free"],
    "mapping": ["memory_map", "memory_unmap"],
    "collectives": ["comm_get_unique_id", "comm_init_rank", "comm_destroy", "comm_abort", "allreduce"],
    "operators": ["op_list", "op_launch"],
    "programs": ["program_create", "program_destroy", "kernel_create", "kernel_destroy", "kernel_launch"],
}
# The size of the ABI 1.0 table: everything before op_list.
TABLE_SIZE_1_0 = ffi.offsetof("hal_plugin_api_t", "op_list")


def status_name(status: int) -> str:
    return f"HAL_STATUS_{STATUS_NAMES[status]}" if 0 <= status < len(STATUS_NAMES) else f"status {status}"


class HalError(RuntimeError):
    """A call failed: the entry, its status and the plugin's get_last_error message."""

    def __init__(self, status: int, message: str, entry: str = ""):
        where = f"{entry}: " if entry else ""
        super().__init__(f"{where}{status_name(status)}: {message or '(no message)'}")
        self.status, self.message, self.entry = status, message, entry


class MissingEntry(RuntimeError):
    """A test called an entry the plugin's table leaves NULL (or lacks: it lies beyond struct_size)."""

    def __init__(self, entry: str):
        super().__init__(f"the plugin's table has no {entry} (NULL or beyond its struct_size)")
        self.entry = entry


class _Tracked:
    """The plugin's table, every entry wrapped so the entry in flight is known while it runs."""

    def __init__(self, plugin: "Plugin"):
        self._plugin = plugin

    def __getattr__(self, entry: str):
        plugin = self._plugin
        value = getattr(plugin.raw, entry)
        if not isinstance(value, ffi.CData) or ffi.typeof(value).kind != "function":
            return value
        if not plugin.has(entry):
            raise MissingEntry(entry)

        def call(*args):
            plugin._enter(entry)
            try:
                return value(*args)
            finally:
                plugin._leave(entry)

        call.__name__ = entry
        self.__dict__[entry] = call  # Later lookups skip __getattr__.
        return call


class Plugin:
    """One plugin library, loaded with dlopen, its table read through `hal_plugin_get_api`.

    `raw` is the table itself; `api` the same entries, tracked (see the module docstring). cffi releases the
    GIL during calls, so the plugin's own threads run freely. `on_entry(names)` is called with the entries in
    flight whenever that set changes (the runner writes them where the parent process can read them).
    """

    def __init__(self, path: str | Path, on_entry: Callable[[list[str]], None] | None = None):
        self.path = Path(path)
        self.lib = ffi.dlopen(str(path))
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._on_entry = on_entry
        self._enter("hal_plugin_get_api")
        try:
            self.raw = self.lib.hal_plugin_get_api()
        finally:
            self._leave("hal_plugin_get_api")
        if self.raw == ffi.NULL:
            raise RuntimeError(f"{path}: hal_plugin_get_api returned NULL")
        self.api = _Tracked(self)

    # --- Which entry is running ---
    def _enter(self, entry: str) -> None:
        with self._lock:
            self._in_flight[entry] = self._in_flight.get(entry, 0) + 1
            if self._on_entry:
                self._on_entry(list(self._in_flight))

    def _leave(self, entry: str) -> None:
        with self._lock:
            if self._in_flight.get(entry, 0) <= 1:
                self._in_flight.pop(entry, None)
            else:
                self._in_flight[entry] -= 1
            if self._on_entry:
                self._on_entry(list(self._in_flight))

    @property
    def in_flight(self) -> list[str]:
        with self._lock:
            return list(self._in_flight)

    # --- The table ---
    @property
    def name(self) -> str:
        return ffi.string(self.raw.name).decode(errors="replace") if self.raw.name != ffi.NULL else ""

    @property
    def version(self) -> str:
        return ffi.string(self.raw.version).decode(errors="replace") if self.raw.version != ffi.NULL else ""

    def has(self, entry: str) -> bool:
        """True when the table holds `entry`: within its struct_size and not NULL (plugin.h, versioning)."""
        offset = ffi.offsetof("hal_plugin_api_t", entry)
        return (offset + ffi.sizeof("void*") <= self.raw.struct_size
                and getattr(self.raw, entry) != ffi.NULL)

    # --- Helpers every area uses ---
    def last_error(self) -> str:
        buffer = ffi.new("char[4096]")
        self.api.get_last_error(buffer, len(buffer), ffi.NULL)
        return ffi.string(buffer).decode(errors="replace")

    def check(self, status: int, entry: str = "") -> None:
        if status != OK:
            raise HalError(status, self.last_error(), entry)

    def initialize(self, config: str | None = None) -> int:
        text = ffi.new("char[]", config.encode()) if config is not None else ffi.NULL
        args = ffi.new("hal_plugin_init_args_t*", [ffi.sizeof("hal_plugin_init_args_t"), ABI_MAJOR, ABI_MINOR, text])
        return self.api.initialize(args)

    def device_count(self) -> int:
        count = ffi.new("int32_t*")
        self.check(self.api.device_count(count), "device_count")
        return count[0]

    def properties(self, device: int):
        props = ffi.new("hal_device_properties_t*")
        props.struct_size = ffi.sizeof("hal_device_properties_t")
        self.check(self.api.device_get_properties(device, props), "device_get_properties")
        return props

    def memory_info(self, device: int) -> tuple[int, int]:
        free, total = ffi.new("uint64_t*"), ffi.new("uint64_t*")
        self.check(self.api.device_get_memory_info(device, free, total), "device_get_memory_info")
        return free[0], total[0]

    def allocate(self, device: int, size: int):
        ptr = ffi.new("void**")
        self.check(self.api.memory_allocate(device, size, ptr), "memory_allocate")
        return ptr[0]

    def free(self, device: int, ptr) -> None:
        self.check(self.api.memory_free(device, ptr), "memory_free")

    def stream(self, device: int):
        stream = ffi.new("hal_stream_t*")
        self.check(self.api.stream_create(device, stream), "stream_create")
        return stream[0]

    def event(self, device: int, flags: int = 0):
        event = ffi.new("hal_event_t*")
        self.check(self.api.event_create(device, flags, event), "event_create")
        return event[0]

    def elapsed_ms(self, start, end) -> float:
        ms = ffi.new("float*")
        self.check(self.api.event_elapsed_time(start, end, ms), "event_elapsed_time")
        return ms[0]

    def map(self, device: int, ptr, size: int):
        host = ffi.new("void**")
        self.check(self.api.memory_map(device, ptr, size, host), "memory_map")
        return host[0]


def addr(ptr) -> int:
    """A device (or host) pointer's address, as an int."""
    return int(ffi.cast("uintptr_t", ptr))


def at(ptr, offset: int):
    """base + offset, a valid device pointer within one allocation (memory.h)."""
    return ffi.cast("void*", addr(ptr) + offset)
