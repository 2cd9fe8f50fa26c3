// HAL plugin ABI: device memory, pinned host memory and host mappings.
//
// Device pointers are opaque addresses in the process's address space (void*), so frameworks can store
// them in their tensors. Unless the device sets HAL_DEVICE_FLAG_HOST_ADDRESSABLE the host must never
// dereference one: it reaches device memory only through the copy entries (stream.h) or memory_map.
// Pointer arithmetic is allowed: base + offset, within one allocation, is a valid device pointer for
// every entry that takes one.
#ifndef HAL_MEMORY_H_
#define HAL_MEMORY_H_

#include "hal/device.h"

#ifdef __cplusplus
extern "C" {
#endif

// Allocates |size_bytes| (> 0) of memory on local device |device|, aligned to at least 256 bytes, and
// writes its address to |out_ptr|. |*out_ptr| must be released with memory_free on the same device.
// Contents are undefined. Fails with HAL_STATUS_OUT_OF_MEMORY when the device cannot hold it (the
// message says how much was asked for and how much is free). Thread-safe; may block (drivers often
// synchronize inside their allocators), so the runtime caches allocations on top of it.
typedef hal_status_t (*hal_memory_allocate_fn)(int32_t device, uint64_t size_bytes, void** out_ptr);

// Releases |ptr|, which memory_allocate returned for |device|. The caller guarantees that no queued or
// running work still uses it (the runtime synchronizes the streams that used it first). Thread-safe; may
// block.
typedef hal_status_t (*hal_memory_free_fn)(int32_t device, void* ptr);

// OPTIONAL. Page-locked host memory the device can copy from and to asynchronously at full speed.
// |*out_ptr| is host-addressable and must be released with host_free; host_free(NULL) does nothing.
// Thread-safe; may block.
typedef hal_status_t (*hal_host_allocate_fn)(uint64_t size_bytes, void** out_ptr);
typedef hal_status_t (*hal_host_free_fn)(void* ptr);

// OPTIONAL (devices with HAL_DEVICE_FLAG_MAPPABLE). Makes |size_bytes| of device memory at |device_ptr|
// addressable by the host and writes the host address to |out_host_ptr|. The mapping aliases the device
// memory: host writes through it are seen by later device work and the reverse, but the host must order
// its accesses against queued work itself (synchronize, or run them as a host function on the stream).
// |*out_host_ptr| stays valid until memory_unmap with the same arguments, which must come before the
// allocation is freed. Mapping a range that is already mapped is allowed and returns the same address;
// each memory_map is balanced by one memory_unmap. Thread-safe; does not block on device work.
typedef hal_status_t (*hal_memory_map_fn)(int32_t device, void* device_ptr, uint64_t size_bytes,
                                          void** out_host_ptr);
typedef hal_status_t (*hal_memory_unmap_fn)(int32_t device, void* host_ptr, uint64_t size_bytes);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_MEMORY_H_
