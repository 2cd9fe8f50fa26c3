"""Loads a HAL plugin .so directly through cffi, without the runtime: for the plugin tests.

The cdef below is the ABI of csrc/include/hal/*.h (v1.1) with the collective entries reduced to
opaque pointers; test_plugins_abi.py checks that the table's struct_size agrees with it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cffi

REPO = Path(__file__).resolve().parents[2]

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
  void* comm_get_unique_id;
  void* comm_init_rank;
  void* comm_destroy;
  void* comm_abort;
  void* allreduce;
  void* allgather;
  void* reduce_scatter;
  void* broadcast;
  void* send;
  void* recv;
  hal_status_t (*op_list)(int32_t, const hal_op_t**, uint64_t*);
  hal_status_t (*op_launch)(hal_stream_t, uint64_t, const hal_value_t*, uint64_t, const hal_tensor_t*, uint64_t);
  hal_status_t (*program_create)(int32_t, const char*, const void*, uint64_t, const char*, hal_program_t*);
  hal_status_t (*program_destroy)(hal_program_t);
  hal_status_t (*kernel_create)(hal_program_t, const char*, hal_kernel_t*);
  hal_status_t (*kernel_destroy)(hal_kernel_t);
  hal_status_t (*kernel_launch)(hal_stream_t, hal_kernel_t, const uint64_t*, const uint64_t*,
                                const hal_kernel_arg_t*, uint64_t);
  const void* extensions;  /* ABI 1.2: the extension chain (hal/extension.h) */
} hal_plugin_api_t;

const hal_plugin_api_t* hal_plugin_get_api(void);
"""
)

OK, NOT_READY, INVALID_ARGUMENT, OUT_OF_MEMORY, UNIMPLEMENTED, DEVICE_ERROR = 0, 1, 2, 3, 4, 5
UNAVAILABLE = 8
FLAG_HOST_ADDRESSABLE, FLAG_EMULATED, FLAG_MAPPABLE = 1, 2, 4
EVENT_TIMING = 1
KIND_OTHER, KIND_CPU, KIND_GPU, KIND_NPU = 0, 1, 2, 3


def plugin_dir() -> Path | None:
    """Where the built plugins are: $HAL_TEST_PLUGIN_DIR, else <repo>/hal/plugins (pip install -e .)."""
    for candidate in (os.environ.get("HAL_TEST_PLUGIN_DIR"), REPO / "hal" / "plugins"):
        if candidate and any(Path(candidate).glob("libhal_plugin_*.so")):
            return Path(candidate)
    return None


def plugin_path(name: str) -> Path | None:
    """The plugin `name`; the null skeleton lives in a skeleton/ subfolder so the runtime does not load it."""
    directory = plugin_dir()
    if directory is None:
        return None
    for path in (directory / f"libhal_plugin_{name}.so", directory / "skeleton" / f"libhal_plugin_{name}.so"):
        if path.exists():
            return path
    return None


class HalError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"status {status}: {message}")
        self.status = status
        self.message = message


class Plugin:
    """One loaded plugin. cffi releases the GIL during calls, so plugin worker threads run freely."""

    _loaded: dict[str, "Plugin"] = {}

    def __init__(self, path: Path):
        self.lib = ffi.dlopen(str(path))
        self.api = self.lib.hal_plugin_get_api()

    @classmethod
    def load(cls, path: Path) -> "Plugin":
        """A private instance of the plugin at `path`, shared by the tests of this process.

        dlopen returns the library already loaded at a path, and the HAL runtime of this same test process may
        be using it (the contract tests): initializing and shutting it down here would pull its state from
        under the runtime. A copy under another path is a separate library with its own globals.
        """
        path = Path(path)
        if str(path) not in cls._loaded:
            private = Path(tempfile.mkdtemp(prefix="hal-plugin-ffi-")) / path.name
            shutil.copy2(path, private)
            cls._loaded[str(path)] = cls(private)
        return cls._loaded[str(path)]

    def last_error(self) -> str:
        buffer = ffi.new("char[1024]")
        self.api.get_last_error(buffer, len(buffer), ffi.NULL)
        return ffi.string(buffer).decode()

    def check(self, status: int) -> None:
        if status != OK:
            raise HalError(status, self.last_error())

    def initialize(self, config: str | None = None) -> int:
        text = ffi.new("char[]", config.encode()) if config is not None else ffi.NULL
        args = ffi.new("hal_plugin_init_args_t*", [ffi.sizeof("hal_plugin_init_args_t"), 1, 1, text])
        return self.api.initialize(args)

    def device_count(self) -> int:
        count = ffi.new("int32_t*")
        self.check(self.api.device_count(count))
        return count[0]

    def properties(self, device: int):
        props = ffi.new("hal_device_properties_t*")
        props.struct_size = ffi.sizeof("hal_device_properties_t")
        self.check(self.api.device_get_properties(device, props))
        return props

    def memory_info(self, device: int) -> tuple[int, int]:
        free, total = ffi.new("uint64_t*"), ffi.new("uint64_t*")
        self.check(self.api.device_get_memory_info(device, free, total))
        return free[0], total[0]

    def allocate(self, device: int, size: int):
        ptr = ffi.new("void**")
        self.check(self.api.memory_allocate(device, size, ptr))
        return ptr[0]

    def stream(self, device: int):
        stream = ffi.new("hal_stream_t*")
        self.check(self.api.stream_create(device, stream))
        return stream[0]

    def event(self, device: int, flags: int = 0):
        event = ffi.new("hal_event_t*")
        self.check(self.api.event_create(device, flags, event))
        return event[0]

    def elapsed_ms(self, start, end) -> float:
        ms = ffi.new("float*")
        self.check(self.api.event_elapsed_time(start, end, ms))
        return ms[0]

    def map(self, device: int, ptr, size: int):
        host = ffi.new("void**")
        self.check(self.api.memory_map(device, ptr, size, host))
        return host[0]
