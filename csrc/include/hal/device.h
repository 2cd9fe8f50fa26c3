// HAL plugin ABI: devices and what they declare about themselves.
//
// A plugin exposes devices numbered 0 .. count-1 (its *local* indices). The runtime gives each device a
// global index across all loaded plugins; plugins only ever see their local indices.
#ifndef HAL_DEVICE_H_
#define HAL_DEVICE_H_

#include "hal/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// Element types, used for peak throughput figures, by collectives and by kernels (kernel.h). Values are
// fixed forever; later minor versions add values above HAL_DTYPE_COUNT.
typedef enum hal_dtype_e {
  HAL_DTYPE_F32 = 0,
  HAL_DTYPE_F16 = 1,
  HAL_DTYPE_BF16 = 2,
  HAL_DTYPE_F64 = 3,
  HAL_DTYPE_F8E4M3 = 4,
  HAL_DTYPE_I8 = 5,
  HAL_DTYPE_U8 = 6,
  HAL_DTYPE_I32 = 7,
  HAL_DTYPE_I64 = 8,
  // The number of ABI 1.0 values: the length of the arrays indexed by dtype in 1.0 structs (peak_flops).
  HAL_DTYPE_COUNT = 9,
  // ABI 1.1 (kernels): element types of ATen tensors that 1.0 lacked. No peak figure in 1.0 structs.
  HAL_DTYPE_BOOL = 9,  // One byte, 0 or 1.
  HAL_DTYPE_I16 = 10,
  HAL_DTYPE_U16 = 11,
  HAL_DTYPE_U32 = 12,
  HAL_DTYPE_U64 = 13,
  HAL_DTYPE_C64 = 14,   // Complex of two f32.
  HAL_DTYPE_C128 = 15,  // Complex of two f64.
  HAL_DTYPE_END = 16,   // One past the largest value of this minor version.
} hal_dtype_e;
typedef int32_t hal_dtype_t;

// Bytes per element of |dtype|, 0 for a value this header does not know (a later minor version's). A
// convenience of the header, not an entry point: plugins, the runtime and its validation layer share it.
static inline size_t hal_dtype_size(hal_dtype_t dtype) {
  switch (dtype) {
    case HAL_DTYPE_F8E4M3: case HAL_DTYPE_I8: case HAL_DTYPE_U8: case HAL_DTYPE_BOOL: return 1;
    case HAL_DTYPE_F16: case HAL_DTYPE_BF16: case HAL_DTYPE_I16: case HAL_DTYPE_U16: return 2;
    case HAL_DTYPE_F32: case HAL_DTYPE_I32: case HAL_DTYPE_U32: return 4;
    case HAL_DTYPE_F64: case HAL_DTYPE_I64: case HAL_DTYPE_U64: case HAL_DTYPE_C64: return 8;
    case HAL_DTYPE_C128: return 16;
    default: return 0;
  }
}

typedef enum hal_device_kind_e {
  HAL_DEVICE_KIND_OTHER = 0,
  HAL_DEVICE_KIND_CPU = 1,
  HAL_DEVICE_KIND_GPU = 2,
  HAL_DEVICE_KIND_NPU = 3,  // Neural processing units and other AI accelerators (Ascend, Gaudi, MLU, ...).
} hal_device_kind_e;
typedef int32_t hal_device_kind_t;

// Bits of hal_device_properties_t.flags.
enum {
  // The host may dereference device pointers directly (the CPU plugin). Devices that can expose their
  // memory to the host only through memory_map do NOT set this.
  HAL_DEVICE_FLAG_HOST_ADDRESSABLE = 1u << 0,
  // The device is emulated in software: its figures describe the emulation, not silicon. Every user
  // interface must label such a device as emulated.
  HAL_DEVICE_FLAG_EMULATED = 1u << 1,
  // The device's memory can be mapped into the host with memory_map (see memory.h).
  HAL_DEVICE_FLAG_MAPPABLE = 1u << 2,
};

#define HAL_DEVICE_NAME_MAX 128
#define HAL_DEVICE_VENDOR_MAX 64

// What a device declares about itself. Grows only at the end.
//
// The caller zero-fills the struct and sets |struct_size| to sizeof(hal_device_properties_t) as *it* was
// compiled; the plugin writes only the fields that lie entirely within |struct_size| (see
// HAL_STRUCT_HAS_FIELD) and leaves the rest untouched, so old callers and new plugins (and the reverse)
// interoperate. Figures that are unknown stay 0.
typedef struct hal_device_properties_t {
  size_t struct_size;
  char name[HAL_DEVICE_NAME_MAX];      // Model name, e.g. "NVIDIA H100 80GB HBM3". NUL-terminated.
  char vendor[HAL_DEVICE_VENDOR_MAX];  // e.g. "NVIDIA". NUL-terminated.
  hal_device_kind_t kind;
  uint32_t flags;                      // HAL_DEVICE_FLAG_* bits.
  uint64_t total_memory_bytes;         // Capacity usable for allocations.
  double peak_flops[HAL_DTYPE_COUNT];  // Dense peak FLOP/s (or OP/s) per hal_dtype_t; 0 = unknown.
  double memory_bandwidth;             // Device memory bandwidth in bytes/s; 0 = unknown.
  double link_bandwidth;               // Device-to-device link bandwidth in bytes/s; 0 = unknown.
  double host_link_bandwidth;          // Host<->device bandwidth in bytes/s; 0 = unknown.
  // Speed relative to the machine it is emulated on (1.0 = native). Emulated devices only; 0 otherwise.
  double relative_speed;
} hal_device_properties_t;

// True when |field| lies entirely within the first |(ptr)->struct_size| bytes of the struct at |ptr|.
#define HAL_STRUCT_HAS_FIELD(ptr, type, field) \
  ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type*)0)->field))

// Writes the number of devices to |out_count|. On a driver error it writes 0 and fails. Thread-safe;
// does not block on device work.
typedef hal_status_t (*hal_device_count_fn)(int32_t* out_count);

// Fills |out_properties| for local device |device| (see hal_device_properties_t for the struct_size
// protocol). Thread-safe; does not block on device work.
typedef hal_status_t (*hal_device_get_properties_fn)(int32_t device, hal_device_properties_t* out_properties);

// Writes the device's free and total memory in bytes, as the plugin sees it (allocations of every
// process and of the plugin's own bookkeeping count as used). Thread-safe; does not block on device work.
typedef hal_status_t (*hal_device_get_memory_info_fn)(int32_t device, uint64_t* out_free_bytes,
                                                      uint64_t* out_total_bytes);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_DEVICE_H_
