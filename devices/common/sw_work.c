// The device work of the software stream engine (sw_stream.h): copies, memset and host functions, and the
// pacing that makes an emulated device slower than the host.
//
// Each kind of work is an entry and a sw_work_fn. The entry checks its arguments now, so mistakes fail at
// the call with INVALID_ARGUMENT, and queues a copy of them; the worker runs the sw_work_fn later, which
// resolves the device pointers again, so memory freed under queued work fails the stream instead of
// corrupting memory. Device memory is reached only through sw_plugin.resolve.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>

#include "sw_stream.h"

#define FAIL(status, format, ...) sw_plugin.fail((status), "%s: " format, sw_plugin.name, ##__VA_ARGS__)

// ------------------------------------------------------------------------------------------------------
// Pacing.

static double speed_of(int32_t device) { return sw_plugin.speed ? sw_plugin.speed(device) : 1.0; }

// CPU time this thread has used: what the host really spent on its work, whatever else ran meanwhile.
static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
  struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

// sw_pace_start takes the wall clock, and this thread's CPU time when the device is slower than the host
// (reading it costs a system call, so only work that sw_pace_device will use it for pays it).
sw_pace_t sw_pace_start(int32_t device) {
  sw_pace_t pace = {.device = device, .wall_ns = sw_now_ns(), .cpu_ns = 0};
  if (speed_of(device) < 1.0) pace.cpu_ns = thread_cpu_ns();
  return pace;
}

// Emulates a slower device: work the host did in c of this thread's CPU time takes c / speed on the device,
// so the worker sleeps for what is left of that after the wall time the work took. Pacing by CPU time, not
// by elapsed time: when the emulated devices share the host's cores, time spent waiting for a core is not
// work, and it is absorbed into the device's own slowness instead of being stretched by 1 / speed with the
// rest. (The torch bridge paces the CPU kernels it runs for emulated devices the same way.)
void sw_pace_device(const sw_pace_t* pace) {
  double speed = speed_of(pace->device);
  if (speed >= 1.0) return;
  uint64_t wall_ns = sw_now_ns() - pace->wall_ns;
  uint64_t device_ns = (uint64_t)((double)(thread_cpu_ns() - pace->cpu_ns) / speed);
  if (device_ns > wall_ns) sleep_ns(device_ns - wall_ns);
}

// Emulates the host link, if configured: an h2d/d2h copy of |size| bytes takes at least size / bandwidth.
static void pace_link(const sw_pace_t* pace, uint64_t size) {
  double link = sw_plugin.link_bytes_per_s ? sw_plugin.link_bytes_per_s(pace->device) : 0;
  if (link <= 0) return;
  uint64_t target_ns = (uint64_t)((double)size / link * 1e9), wall_ns = sw_now_ns() - pace->wall_ns;
  if (target_ns > wall_ns) sleep_ns(target_ns - wall_ns);
}

// ------------------------------------------------------------------------------------------------------
// Copies: h2d, d2h, d2d and peer are one kind of work, with a device (or -1: host memory) on each side.

typedef struct copy_args_t {
  void* dst;
  const void* src;
  uint64_t size;
  int32_t dst_device, src_device;
} copy_args_t;

// One side of a copy: device memory resolves to what the worker may touch; host memory stays as it is.
static hal_status_t resolve_side(int32_t device, const void* ptr, uint64_t size, void** out) {
  if (device >= 0) return sw_plugin.resolve(device, ptr, size, out);
  *out = (void*)ptr;
  return HAL_STATUS_OK;
}

static hal_status_t run_copy(hal_stream_t stream, const void* args) {
  const copy_args_t* copy = args;
  if (copy->size == 0) return HAL_STATUS_OK;
  // Between host and device the link paces the copy; on one device or between two, the slower device.
  const int over_link = copy->dst_device < 0 || copy->src_device < 0;
  sw_pace_t pace;
  if (over_link) {
    pace = (sw_pace_t){.device = sw_stream_device(stream), .wall_ns = sw_now_ns()};
  } else {
    pace = sw_pace_start(speed_of(copy->dst_device) < speed_of(copy->src_device) ? copy->dst_device
                                                                               : copy->src_device);
  }
  void *dst, *src;
  hal_status_t status = resolve_side(copy->dst_device, copy->dst, copy->size, &dst);
  if (status == HAL_STATUS_OK) status = resolve_side(copy->src_device, copy->src, copy->size, &src);
  if (status != HAL_STATUS_OK) return status;
  memcpy(dst, src, copy->size);  // One plain memcpy: speed-1.0 devices copy at host speed.
  if (over_link) pace_link(&pace, copy->size); else sw_pace_device(&pace);
  return HAL_STATUS_OK;
}

// Checks a copy's pointers now (the worker checks them again when it runs) and queues it.
static hal_status_t queue_copy(hal_stream_t stream, const char* entry, void* dst, int32_t dst_device,
                               const void* src, int32_t src_device, uint64_t size) {
  hal_status_t status = sw_check_stream(stream);
  if (status == HAL_STATUS_OK && size > 0) {
    void* unused;
    if (dst_device >= 0) status = sw_plugin.resolve(dst_device, dst, size, &unused);
    if (status == HAL_STATUS_OK && src_device >= 0) status = sw_plugin.resolve(src_device, src, size, &unused);
    // Host pointers that are really device memory would crash the worker; say so here instead.
    if (status == HAL_STATUS_OK && sw_plugin.is_device_ptr != NULL &&
        ((dst_device < 0 && sw_plugin.is_device_ptr(dst)) || (src_device < 0 && sw_plugin.is_device_ptr(src)))) {
      status = FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: a host-side pointer is %s device memory", entry,
                    sw_plugin.name);
    }
    if (status == HAL_STATUS_OK && (dst == NULL || src == NULL)) {
      status = FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: NULL pointer", entry);
    }
  }
  if (status != HAL_STATUS_OK) return status;
  const copy_args_t copy = {dst, src, size, dst_device, src_device};
  return sw_enqueue(stream, entry, run_copy, &copy, sizeof(copy));
}

hal_status_t sw_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_h2d_async", dst, sw_stream_device(stream), src, -1, size);
}

hal_status_t sw_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2h_async", dst, -1, src, sw_stream_device(stream), size);
}

hal_status_t sw_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2d_async", dst, sw_stream_device(stream), src, sw_stream_device(stream),
                    size);
}

hal_status_t sw_memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                  int32_t src_device, uint64_t size) {
  hal_status_t status = sw_check_stream(stream);
  if (status == HAL_STATUS_OK) status = sw_plugin.check_device(dst_device);
  if (status == HAL_STATUS_OK) status = sw_plugin.check_device(src_device);
  if (status != HAL_STATUS_OK) return status;
  const int32_t device = sw_stream_device(stream);
  if (device != dst_device && device != src_device) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT,
                "memcpy_peer_async: the stream's device %d is neither the source %d nor the destination %d",
                device, src_device, dst_device);
  }
  return queue_copy(stream, "memcpy_peer_async", dst, dst_device, src, src_device, size);
}

// ------------------------------------------------------------------------------------------------------
// Memset.

typedef struct memset_args_t {
  void* dst;
  uint64_t size;
  uint8_t value;
} memset_args_t;

static hal_status_t run_memset(hal_stream_t stream, const void* args) {
  const memset_args_t* fill = args;
  if (fill->size == 0) return HAL_STATUS_OK;
  const sw_pace_t pace = sw_pace_start(sw_stream_device(stream));
  void* dst;
  hal_status_t status = sw_plugin.resolve(sw_stream_device(stream), fill->dst, fill->size, &dst);
  if (status != HAL_STATUS_OK) return status;
  memset(dst, fill->value, fill->size);
  sw_pace_device(&pace);
  return HAL_STATUS_OK;
}

hal_status_t sw_memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size) {
  hal_status_t status = sw_check_stream(stream);
  void* unused;
  if (status == HAL_STATUS_OK && size > 0) status = sw_plugin.resolve(sw_stream_device(stream), dst, size, &unused);
  if (status != HAL_STATUS_OK) return status;
  const memset_args_t fill = {dst, size, value};
  return sw_enqueue(stream, "memset_async", run_memset, &fill, sizeof(fill));
}

// ------------------------------------------------------------------------------------------------------
// Host functions: paced like device work, since they stand in for the device's kernels.

typedef struct host_func_args_t {
  hal_host_fn fn;
  void* user_data;
} host_func_args_t;

static hal_status_t run_host_func(hal_stream_t stream, const void* args) {
  const host_func_args_t* call = args;
  const sw_pace_t pace = sw_pace_start(sw_stream_device(stream));
  call->fn(call->user_data);
  sw_pace_device(&pace);
  return HAL_STATUS_OK;
}

hal_status_t sw_launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data) {
  if (fn == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "launch_host_func: fn is NULL");
  const host_func_args_t call = {fn, user_data};
  return sw_enqueue(stream, "launch_host_func", run_host_func, &call, sizeof(call));
}
