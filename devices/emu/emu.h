// The emu plugin's internal declarations, shared by its two files:
//   emu.c         the plugin table, error model, configuration, devices and memory;
//   emu_stream.c  streams, events and the worker thread that runs queued work.
// Nothing here is part of the HAL ABI; a vendor copying this sample renames the `emu_` prefix.
#ifndef HAL_EMU_H_
#define HAL_EMU_H_

#include "hal/hal.h"

// One emulated device, as read from the configuration (see emu.c).
typedef struct emu_device_t {
  char name[HAL_DEVICE_NAME_MAX];  // The group name, e.g. "emu-fast".
  double speed;                    // Relative speed in (0, 1]: work takes 1/speed as long as on the host.
  uint64_t capacity;               // Bytes of device memory.
  double link_bytes_per_s;         // Emulated host link for h2d/d2h copies; 0 = as fast as memcpy.
  int mappable;                    // memory_map allowed (config map=1, the default).
} emu_device_t;

// Set by initialize, read-only afterwards (so entries read them without a lock).
extern emu_device_t* g_emu_devices;
extern int32_t g_emu_device_count;

// --- Error model (emu.c) ----------------------------------------------------------------------------
// Every entry returns through one of these two, so the thread-local last error is always current:
// emu_ok() clears it, emu_fail() formats it and returns |status|.
hal_status_t emu_ok(void);
hal_status_t emu_fail(hal_status_t status, const char* format, ...) __attribute__((format(printf, 2, 3)));
hal_status_t emu_fail_errno(hal_status_t status, int err, const char* format, ...)
    __attribute__((format(printf, 3, 4)));
// The calling thread's last error message (the worker reads it to make a sticky stream error).
const char* emu_last_message(void);
// OK, or UNAVAILABLE before initialize / INVALID_ARGUMENT for an unknown device index.
hal_status_t emu_check_device(int32_t device);

// --- Memory (emu.c) ---------------------------------------------------------------------------------
// Translates |size| bytes of device memory at |device_ptr| on |device| into the plugin's private
// read/write alias of the same pages. Fails with INVALID_ARGUMENT unless the whole range lies inside one
// live allocation of |device|. This is the only way plugin code touches device memory.
hal_status_t emu_resolve(int32_t device, const void* device_ptr, uint64_t size, void** out_alias);
// True when |ptr| lies in a device allocation of any emu device (such a pointer is not host memory).
int emu_is_device_ptr(const void* ptr);

// --- Streams and events (emu_stream.c) --------------------------------------------------------------
hal_status_t emu_stream_create(int32_t device, hal_stream_t* out_stream);
hal_status_t emu_stream_destroy(hal_stream_t stream);
hal_status_t emu_stream_synchronize(hal_stream_t stream);
hal_status_t emu_stream_query(hal_stream_t stream);
hal_status_t emu_stream_wait_event(hal_stream_t stream, hal_event_t event);
hal_status_t emu_launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data);
hal_status_t emu_event_create(int32_t device, uint32_t flags, hal_event_t* out_event);
hal_status_t emu_event_destroy(hal_event_t event);
hal_status_t emu_event_record(hal_event_t event, hal_stream_t stream);
hal_status_t emu_event_synchronize(hal_event_t event);
hal_status_t emu_event_query(hal_event_t event);
hal_status_t emu_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms);
hal_status_t emu_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t emu_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t emu_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t emu_memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                   int32_t src_device, uint64_t size);
hal_status_t emu_memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size);

#endif  // HAL_EMU_H_
