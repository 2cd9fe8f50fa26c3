// emu: an emulated accelerator, and the sample a vendor copies to write a HAL plugin.
//
// Read this file top to bottom:
//   1. the error model (a thread-local last error, set by every entry on its way out);
//   2. configuration: which devices exist, how fast they are, how much memory they have;
//   3. the device entries (count, properties, memory info);
//   4. device memory: each allocation is real memory the host cannot touch except through the plugin;
//   5. what the stream engine needs from emu, and the table the plugin exports.
// Streams, events and queued copies come from the software stream engine in devices/common (sw_stream.h),
// which HAL's cpu plugin shares: a stream is a FIFO run by a worker thread. So do the collectives
// (collective.h: allreduce, allgather, ... between processes of one host): the engine implements them
// through POSIX shared memory (devices/common/sw_collective.c), queued on those streams like copies; they
// are emu's "native collective library", the role NCCL plays for a CUDA plugin. A vendor copying emu takes
// devices/common along while the device is emulated; a driver with queues of its own replaces the sw_*
// entries in the table with calls to them (and its collective library's) and keeps sections 1 to 4.
//
// What the emulation is for: the devices behave like an accelerator as far as the HAL contract can tell
// (asynchronous streams, device memory that is not host memory, a fixed capacity, slower and faster
// devices), so code above HAL that forgets a synchronize, dereferences a device pointer or ignores
// out-of-memory fails in tests on any machine. All figures describe the emulation, not silicon; the
// devices carry HAL_DEVICE_FLAG_EMULATED so every user interface can say so.
#define _GNU_SOURCE  // memfd_create
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hal/hal.h"
#include "sw_stream.h"

// hal_add_plugin passes the project's version; a plugin built on its own states its own.
#ifndef HAL_PLUGIN_VERSION
#define HAL_PLUGIN_VERSION "0.1.0"
#endif

// ======================================================================================================
// 1. Error model
// ======================================================================================================
// status.h: a failing entry leaves a message (and a native code) that get_last_error reads back on the
// same thread; a succeeding entry leaves it empty. Thread-local storage makes that free of locks.

static _Thread_local char t_message[512];
static _Thread_local int32_t t_native_code;

static hal_status_t emu_ok(void) {
  t_message[0] = '\0';
  t_native_code = 0;
  return HAL_STATUS_OK;
}

static hal_status_t emu_vfail(hal_status_t status, int32_t native, const char* format, va_list args) {
  vsnprintf(t_message, sizeof(t_message), format, args);
  t_native_code = native;
  return status;
}

__attribute__((format(printf, 2, 3)))
static hal_status_t emu_fail(hal_status_t status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  emu_vfail(status, 0, format, args);
  va_end(args);
  return status;
}

// For failures of the operating system: the errno becomes the native code and its text ends the message.
__attribute__((format(printf, 3, 4)))
static hal_status_t emu_fail_errno(hal_status_t status, int err, const char* format, ...) {
  va_list args;
  va_start(args, format);
  emu_vfail(status, err, format, args);
  va_end(args);
  size_t used = strlen(t_message);
  snprintf(t_message + used, sizeof(t_message) - used, ": %s (errno %d)", strerror(err), err);
  return status;
}

// The calling thread's last message: the stream engine's worker reads it when queued work fails.
static const char* emu_last_message(void) { return t_message; }

static size_t emu_get_last_error(char* buffer, size_t capacity, int32_t* out_native_code) {
  size_t length = strlen(t_message);
  if (capacity > 0) {
    size_t n = length < capacity - 1 ? length : capacity - 1;
    memcpy(buffer, t_message, n);
    buffer[n] = '\0';
  }
  if (out_native_code) *out_native_code = t_native_code;
  return length;
}

// ======================================================================================================
// 2. Configuration
// ======================================================================================================
// The device list comes from hal_plugin_init_args_t.config, else the environment variable
// HAL_EMU_DEVICES, else EMU_DEFAULT_CONFIG. The format is a ';'-separated list of groups
//
//     NAME:COUNT[:speed=X][:mem=SIZE][:link=GBPS][:map=0|1][:ops=0|1]
//
//   NAME   the model name of the group's devices ([A-Za-z0-9_.-]+), e.g. "emu-fast";
//   COUNT  how many devices of the group (1..EMU_MAX_DEVICES in all);
//   speed  relative speed in [EMU_MIN_SPEED, 1], default 1: work on the device takes 1/speed as long as on
//          the host. The floor keeps an emulated device usable: a copy that takes 1 ms on the host takes
//          0.1 s at 0.01, and 1e-9 would take 11 days; far below it the pacing arithmetic overflows;
//   mem    capacity in [EMU_MIN_MEM, EMU_MAX_MEM], a byte count with an optional suffix B, KiB, MiB, GiB or
//          TiB (default 2GiB): at least one page, the smallest allocation, and at most 64 TiB, more than
//          any accelerator has and half of a 47-bit address space (memory is reserved only as allocated);
//   link   emulated host link in GB/s (1e9 bytes/s) that paces h2d/d2h copies, in [EMU_MIN_LINK_GBPS,
//          EMU_MAX_LINK_GBPS]; default unpaced. At 0.01 GB/s (10 MB/s) a 1 MiB copy takes 0.1 s, slower
//          would hang tests as a tiny speed does; above 1000 GB/s no host copies fast enough to be paced;
//   map    1 (default): the host may map device memory (memory_map); 0: it may not, so the host reaches the
//          device's memory only through copies, as with most discrete accelerators;
//   ops    1 (default): the device declares emu's own kernels (emu_ops.c); 0: none, so every op runs torch's
//          CPU kernels paced at the device's speed. emu's kernels are plain C loops (a sample, several times
//          slower than torch's tuned CPU kernels), so emulations calibrated in fractions of a host core, such
//          as the training demo's, turn them off.
// A malformed configuration makes initialize fail with INVALID_ARGUMENT naming the group, the bad value
// and what is accepted. NaN and infinities are never accepted.

#define EMU_DEFAULT_CONFIG "emu-fast:2:speed=1.0:mem=2GiB;emu-slow:2:speed=0.5:mem=2GiB"
#define EMU_MAX_DEVICES 64
#define EMU_MIN_SPEED 0.01
#define EMU_MIN_MEM 4096ull
#define EMU_MAX_MEM (64ull << 40)
#define EMU_MIN_LINK_GBPS 0.01
#define EMU_MAX_LINK_GBPS 1000.0

// One emulated device, as read from the configuration.
typedef struct emu_device_t {
  char name[HAL_DEVICE_NAME_MAX];  // The group name, e.g. "emu-fast".
  double speed;                    // Relative speed in [EMU_MIN_SPEED, 1]: work takes 1/speed as long.
  uint64_t capacity;               // Bytes of device memory.
  double link_bytes_per_s;         // Emulated host link for h2d/d2h copies; 0 = as fast as memcpy.
  int mappable;                    // memory_map allowed (config map=1, the default).
  int operators;                   // Declares emu's kernels (config ops=1, the default).
} emu_device_t;

// Set by initialize, read-only afterwards (so entries read them without a lock).
static emu_device_t* g_emu_devices;
static int32_t g_emu_device_count;

// Removes leading and trailing blanks in place.
static char* trim(char* s) {
  while (*s == ' ' || *s == '\t') s++;
  char* end = s + strlen(s);
  while (end > s && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
  return s;
}

// A finite decimal number in [low, high], or NAN.
static double parse_number(const char* text, double low, double high) {
  char* end;
  errno = 0;
  double value = strtod(text, &end);
  if (end == text || *end != '\0' || errno != 0 || !isfinite(value) || !(value >= low && value <= high)) {
    return NAN;
  }
  return value;
}

// Parses one group "NAME:COUNT[:key=value]..." (modified in place) and appends its devices.
static hal_status_t parse_group(char* group, const char* whole, emu_device_t* devices, int32_t* count) {
  char copy[256];  // The group as written, for messages (parsing cuts it into pieces).
  snprintf(copy, sizeof(copy), "%s", group);
#define BAD_GROUP(why, ...)                                                                            \
  emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: bad device group '%s' in config '%s': " why, copy, whole, \
           ##__VA_ARGS__)

  char* name = trim(strsep(&group, ":"));
  size_t name_length = strlen(name);
  if (name_length == 0 || name_length >= HAL_DEVICE_NAME_MAX ||
      strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != name_length) {
    return BAD_GROUP("NAME '%s' must be 1-%d characters of [A-Za-z0-9_.-]", name, HAL_DEVICE_NAME_MAX - 1);
  }
  if (group == NULL) return BAD_GROUP("missing ':COUNT' after the name");
  char* count_text = trim(strsep(&group, ":"));
  double n = parse_number(count_text, 1, EMU_MAX_DEVICES);
  if (isnan(n) || n != floor(n)) {
    return BAD_GROUP("COUNT '%s' is not a whole number in 1..%d", count_text, EMU_MAX_DEVICES);
  }
  if (*count + (int32_t)n > EMU_MAX_DEVICES) return BAD_GROUP("more than %d devices in all", EMU_MAX_DEVICES);

  emu_device_t device = {.speed = 1.0, .capacity = 2ull << 30, .link_bytes_per_s = 0, .mappable = 1,
                         .operators = 1};
  snprintf(device.name, sizeof(device.name), "%s", name);
  while (group != NULL) {
    char* option = trim(strsep(&group, ":"));
    char* value = strchr(option, '=');
    if (value == NULL) return BAD_GROUP("option '%s' is not key=value", option);
    *value++ = '\0';
    if (strcmp(option, "speed") == 0) {
      device.speed = parse_number(value, EMU_MIN_SPEED, 1);
      if (isnan(device.speed)) return BAD_GROUP("speed '%s' is not a number in [%g, 1]", value, EMU_MIN_SPEED);
    } else if (strcmp(option, "mem") == 0) {
      device.capacity = sw_parse_size(value);
      if (device.capacity < EMU_MIN_MEM || device.capacity > EMU_MAX_MEM) {
        return BAD_GROUP("mem '%s' is not a size in [4KiB, 64TiB] such as 1048576, 512MiB or 2GiB", value);
      }
    } else if (strcmp(option, "link") == 0) {
      double gbps = parse_number(value, EMU_MIN_LINK_GBPS, EMU_MAX_LINK_GBPS);
      if (isnan(gbps)) {
        return BAD_GROUP("link '%s' is not a number of GB/s in [%g, %g]", value, EMU_MIN_LINK_GBPS,
                         EMU_MAX_LINK_GBPS);
      }
      device.link_bytes_per_s = gbps * 1e9;
    } else if (strcmp(option, "map") == 0) {
      if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0) return BAD_GROUP("map '%s' is not 0 or 1", value);
      device.mappable = value[0] == '1';
    } else if (strcmp(option, "ops") == 0) {
      if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0) return BAD_GROUP("ops '%s' is not 0 or 1", value);
      device.operators = value[0] == '1';
    } else {
      return BAD_GROUP("unknown option '%s' (known: speed, mem, link, map, ops)", option);
    }
  }
  for (int32_t i = 0; i < (int32_t)n; i++) devices[(*count)++] = device;
  return HAL_STATUS_OK;
#undef BAD_GROUP
}

// Parses a whole configuration into g_emu_devices / g_emu_device_count.
static hal_status_t parse_config(const char* config) {
  emu_device_t* devices = calloc(EMU_MAX_DEVICES, sizeof(emu_device_t));
  char* text = strdup(config);
  if (devices == NULL || text == NULL) {
    free(devices);
    free(text);
    return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: out of host memory parsing the config");
  }
  int32_t count = 0;
  hal_status_t status = HAL_STATUS_OK;
  for (char *rest = text, *group; status == HAL_STATUS_OK && (group = strsep(&rest, ";")) != NULL;) {
    if (*trim(group) != '\0') status = parse_group(trim(group), config, devices, &count);  // Skip empty groups.
  }
  free(text);
  if (status == HAL_STATUS_OK && count == 0) {
    status = emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: config '%s' declares no devices", config);
  }
  if (status != HAL_STATUS_OK) {
    free(devices);
    return status;
  }
  g_emu_devices = devices;
  g_emu_device_count = count;
  return HAL_STATUS_OK;
}

// ======================================================================================================
// 3. Initialization and devices
// ======================================================================================================

static uint64_t* g_in_use;  // Bytes allocated per device; guarded by g_memory_mutex (section 4).
static size_t g_page_size;

static void register_fork_handlers(void);
static pthread_once_t g_fork_handlers_once = PTHREAD_ONCE_INIT;

static hal_status_t emu_initialize(const hal_plugin_init_args_t* args) {
  // Read init args field by field through the struct_size protocol, so older loaders work too.
  const char* config = NULL;
  if (args != NULL && HAL_STRUCT_HAS_FIELD(args, hal_plugin_init_args_t, config)) config = args->config;
  if (config == NULL || config[0] == '\0') config = getenv("HAL_EMU_DEVICES");
  if (config == NULL || config[0] == '\0') config = EMU_DEFAULT_CONFIG;
  hal_status_t status = parse_config(config);
  if (status != HAL_STATUS_OK) return status;
  g_in_use = calloc((size_t)g_emu_device_count, sizeof(uint64_t));
  if (g_in_use == NULL) return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: out of host memory");
  g_page_size = (size_t)sysconf(_SC_PAGESIZE);
  pthread_once(&g_fork_handlers_once, register_fork_handlers);
  return emu_ok();
}

// The loader guarantees every handle and allocation is released, so only the tables remain.
static void emu_free_allocation_table(void);
static void emu_shutdown(void) {
  emu_free_allocation_table();
  free(g_emu_devices);
  free(g_in_use);
  g_emu_devices = NULL;
  g_in_use = NULL;
  g_emu_device_count = 0;
}

static hal_status_t emu_check_device(int32_t device) {
  if (g_emu_devices == NULL) return emu_fail(HAL_STATUS_UNAVAILABLE, "emu: plugin is not initialized");
  if (device < 0 || device >= g_emu_device_count) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: no device %d (the plugin has %d)", device,
                    g_emu_device_count);
  }
  return HAL_STATUS_OK;
}

static hal_status_t emu_device_count(int32_t* out_count) {
  if (out_count == NULL) return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: out_count is NULL");
  *out_count = g_emu_device_count;  // 0 before initialize, as the contract asks.
  if (g_emu_devices == NULL) return emu_fail(HAL_STATUS_UNAVAILABLE, "emu: plugin is not initialized");
  return emu_ok();
}

// Nominal figures of an emulated device at speed 1.0. They are made up to be plausible for a small
// accelerator emulated on one host core and are scaled by the device's speed; the planner may use them,
// but nothing here computes at these rates (emu has no kernels, only copies).
#define EMU_NOMINAL_F32_FLOPS 1.0e12
#define EMU_NOMINAL_MEMORY_BANDWIDTH 20.0e9  // About what one host core's memcpy reaches.
#define EMU_NOMINAL_HOST_LINK 16.0e9         // Reported when no link= is configured (copies are unpaced).

static hal_status_t emu_device_get_properties(int32_t device, hal_device_properties_t* out) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL || out->struct_size < offsetof(hal_device_properties_t, name)) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: properties is NULL or its struct_size is too small");
  }
  // Fill a complete copy, then hand out only the fields the caller's struct_size covers.
  const emu_device_t* d = &g_emu_devices[device];
  hal_device_properties_t p;
  memset(&p, 0, sizeof(p));
  snprintf(p.name, sizeof(p.name), "%s", d->name);
  snprintf(p.vendor, sizeof(p.vendor), "HAL emulator");
  p.kind = HAL_DEVICE_KIND_NPU;
  // Never HOST_ADDRESSABLE: the host reaches emu memory only through copies or memory_map.
  p.flags = HAL_DEVICE_FLAG_EMULATED | (d->mappable ? HAL_DEVICE_FLAG_MAPPABLE : 0);
  p.total_memory_bytes = d->capacity;
  const double f32 = EMU_NOMINAL_F32_FLOPS * d->speed;
  p.peak_flops[HAL_DTYPE_F32] = f32;
  p.peak_flops[HAL_DTYPE_F64] = f32 / 2;
  p.peak_flops[HAL_DTYPE_F16] = p.peak_flops[HAL_DTYPE_BF16] = f32 * 2;
  p.peak_flops[HAL_DTYPE_F8E4M3] = p.peak_flops[HAL_DTYPE_I8] = p.peak_flops[HAL_DTYPE_U8] = f32 * 4;
  p.peak_flops[HAL_DTYPE_I32] = f32;
  p.peak_flops[HAL_DTYPE_I64] = f32 / 2;
  p.memory_bandwidth = EMU_NOMINAL_MEMORY_BANDWIDTH * d->speed;
  p.link_bandwidth = p.memory_bandwidth;  // Peer copies run at the slower device's copy speed.
  p.host_link_bandwidth = d->link_bytes_per_s > 0 ? d->link_bytes_per_s : EMU_NOMINAL_HOST_LINK;
  p.relative_speed = d->speed;
  size_t size = out->struct_size < sizeof(p) ? out->struct_size : sizeof(p);
  memcpy((char*)out + sizeof(size_t), (const char*)&p + sizeof(size_t), size - sizeof(size_t));
  return emu_ok();
}

// ======================================================================================================
// 4. Device memory
// ======================================================================================================
// Each allocation is an anonymous memory file (memfd) mapped twice:
//   - the *device address* handed to the caller is a PROT_NONE mapping, so a host-side dereference of
//     device memory crashes (SIGSEGV) instead of working by luck, as it would on a real accelerator;
//   - the *alias* is a read/write mapping of the same pages that only the plugin uses: copies, memset
//     and memory_map go through it.
// The fd is closed right after mapping (the mappings keep the memory alive), so many allocations do not
// exhaust the process's file descriptors. mmap gives page alignment, above the 256 bytes HAL asks for.
//
// A sorted table maps device addresses to allocations. Lookups binary-search it under one mutex: the
// table is touched once per queued operation, never per byte, so copies stay at memcpy speed.

typedef struct emu_allocation_t {
  uintptr_t base;        // The device address (the PROT_NONE mapping).
  uint64_t size;         // Bytes the caller asked for.
  uint64_t mapped_size;  // size rounded up to pages: what both mappings span and what counts as used.
  char* alias;           // The plugin's read/write view of the same pages.
  int32_t device;
} emu_allocation_t;

static pthread_mutex_t g_memory_mutex = PTHREAD_MUTEX_INITIALIZER;

// fork(): a worker thread may hold the table's lock at that moment. Holding it across fork() gives the
// child a consistent table, so the child can still free its copies of the mappings.
static void lock_memory(void) { pthread_mutex_lock(&g_memory_mutex); }
static void unlock_memory(void) { pthread_mutex_unlock(&g_memory_mutex); }
static void register_fork_handlers(void) { pthread_atfork(lock_memory, unlock_memory, unlock_memory); }
static emu_allocation_t* g_allocations;  // Sorted by base.
static size_t g_allocation_count, g_allocation_capacity;

static void emu_free_allocation_table(void) {
  free(g_allocations);
  g_allocations = NULL;
  g_allocation_count = g_allocation_capacity = 0;
}

// Index of the allocation containing |address|, or -1. Call with g_memory_mutex held.
static ptrdiff_t find_allocation(uintptr_t address) {
  size_t low = 0, high = g_allocation_count;  // Find the first allocation with base > address.
  while (low < high) {
    size_t mid = (low + high) / 2;
    if (g_allocations[mid].base <= address) low = mid + 1; else high = mid;
  }
  if (low == 0) return -1;
  const emu_allocation_t* a = &g_allocations[low - 1];
  return address < a->base + a->size ? (ptrdiff_t)(low - 1) : -1;
}

// Translates |size| bytes of device memory at |device_ptr| on |device| into the plugin's private read/write
// alias of the same pages. Fails with INVALID_ARGUMENT unless the whole range lies inside one live
// allocation of |device|. This is the only way plugin code touches device memory.
static hal_status_t emu_resolve(int32_t device, const void* device_ptr, uint64_t size, void** out_alias) {
  uintptr_t address = (uintptr_t)device_ptr;
  pthread_mutex_lock(&g_memory_mutex);
  ptrdiff_t i = find_allocation(address);
  emu_allocation_t a = i >= 0 ? g_allocations[i] : (emu_allocation_t){0};
  pthread_mutex_unlock(&g_memory_mutex);
  if (i < 0 || a.device != device) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: %p is not memory allocated on device %d", device_ptr,
                    device);
  }
  if (size > a.base + a.size - address) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT,
                    "emu: %llu bytes at %p overrun its allocation (%llu bytes at %p) on device %d",
                    (unsigned long long)size, device_ptr, (unsigned long long)a.size, (void*)a.base, device);
  }
  *out_alias = a.alias + (address - a.base);
  return HAL_STATUS_OK;
}

// True when |ptr| lies in a device allocation of any emu device (such a pointer is not host memory).
static int emu_is_device_ptr(const void* ptr) {
  pthread_mutex_lock(&g_memory_mutex);
  int found = find_allocation((uintptr_t)ptr) >= 0;
  pthread_mutex_unlock(&g_memory_mutex);
  return found;
}

// Inserts |a| keeping the table sorted. Call with g_memory_mutex held.
static int insert_allocation(const emu_allocation_t* a) {
  if (g_allocation_count == g_allocation_capacity) {
    size_t capacity = g_allocation_capacity ? 2 * g_allocation_capacity : 64;
    emu_allocation_t* grown = realloc(g_allocations, capacity * sizeof(*grown));
    if (grown == NULL) return 0;
    g_allocations = grown;
    g_allocation_capacity = capacity;
  }
  size_t at = 0;
  while (at < g_allocation_count && g_allocations[at].base < a->base) at++;  // Linear: memmove is O(n) anyway.
  memmove(&g_allocations[at + 1], &g_allocations[at], (g_allocation_count - at) * sizeof(*a));
  g_allocations[at] = *a;
  g_allocation_count++;
  return 1;
}

static hal_status_t emu_memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ptr == NULL || size == 0) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: memory_allocate needs size > 0 and out_ptr");
  }
  const uint64_t capacity = g_emu_devices[device].capacity;
  const uint64_t mapped_size = (size + g_page_size - 1) / g_page_size * g_page_size;

  // Reserve the capacity first, so concurrent allocations cannot overshoot it together.
  pthread_mutex_lock(&g_memory_mutex);
  const uint64_t in_use = g_in_use[device];
  const int fits = mapped_size >= size && mapped_size <= capacity - in_use;
  if (fits) g_in_use[device] += mapped_size;
  pthread_mutex_unlock(&g_memory_mutex);
  if (!fits) {
    return emu_fail(HAL_STATUS_OUT_OF_MEMORY,
                    "emu: device %d (%s) is out of memory: requested %llu bytes, %llu bytes in use of a "
                    "capacity of %llu bytes (%llu free)",
                    device, g_emu_devices[device].name, (unsigned long long)size, (unsigned long long)in_use,
                    (unsigned long long)capacity, (unsigned long long)(capacity - in_use));
  }

  emu_allocation_t a = {.size = size, .mapped_size = mapped_size, .device = device};
  void* guard = MAP_FAILED;
  void* alias = MAP_FAILED;
  int err = 0;
  int fd = memfd_create("hal-emu-device-memory", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)mapped_size) != 0 ||
      (guard = mmap(NULL, mapped_size, PROT_NONE, MAP_SHARED, fd, 0)) == MAP_FAILED ||
      (alias = mmap(NULL, mapped_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    err = errno;
  }
  if (fd >= 0) close(fd);
  if (err == 0) {
    a.base = (uintptr_t)guard;
    a.alias = alias;
    pthread_mutex_lock(&g_memory_mutex);
    if (!insert_allocation(&a)) err = ENOMEM;
    pthread_mutex_unlock(&g_memory_mutex);
  }
  if (err != 0) {  // Undo the mappings and the reservation.
    if (guard != MAP_FAILED) munmap(guard, mapped_size);
    if (alias != MAP_FAILED) munmap(alias, mapped_size);
    pthread_mutex_lock(&g_memory_mutex);
    g_in_use[device] -= mapped_size;
    pthread_mutex_unlock(&g_memory_mutex);
    return emu_fail_errno(HAL_STATUS_OUT_OF_MEMORY, err, "emu: mapping %llu bytes for device %d failed",
                          (unsigned long long)size, device);
  }
  *out_ptr = guard;
  return emu_ok();
}

static hal_status_t emu_memory_free(int32_t device, void* ptr) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_memory_mutex);
  ptrdiff_t i = find_allocation((uintptr_t)ptr);
  int ok = i >= 0 && g_allocations[i].base == (uintptr_t)ptr && g_allocations[i].device == device;
  emu_allocation_t a = ok ? g_allocations[i] : (emu_allocation_t){0};
  if (ok) {
    memmove(&g_allocations[i], &g_allocations[i + 1], (g_allocation_count - i - 1) * sizeof(a));
    g_allocation_count--;
    g_in_use[device] -= a.mapped_size;
  }
  pthread_mutex_unlock(&g_memory_mutex);
  if (!ok) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: memory_free(%d, %p): not an allocation of this device",
                    device, ptr);
  }
  munmap((void*)a.base, a.mapped_size);
  munmap(a.alias, a.mapped_size);
  return emu_ok();
}

static hal_status_t emu_device_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_free == NULL || out_total == NULL) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: memory info outputs are NULL");
  }
  pthread_mutex_lock(&g_memory_mutex);
  *out_total = g_emu_devices[device].capacity;
  *out_free = *out_total - g_in_use[device];
  pthread_mutex_unlock(&g_memory_mutex);
  return emu_ok();
}

// memory_map hands out the alias: the host then reads and writes the very pages the device uses.
static hal_status_t emu_memory_map(int32_t device, void* device_ptr, uint64_t size, void** out_host_ptr) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_host_ptr == NULL) return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: out_host_ptr is NULL");
  if (!g_emu_devices[device].mappable) {
    return emu_fail(HAL_STATUS_UNIMPLEMENTED, "emu: device %d (%s) is configured with map=0: its memory cannot be "
                    "mapped to the host", device, g_emu_devices[device].name);
  }
  status = emu_resolve(device, device_ptr, size, out_host_ptr);
  return status == HAL_STATUS_OK ? emu_ok() : status;
}

// The alias lives as long as the allocation, so unmapping only checks that the range was one we mapped.
static hal_status_t emu_memory_unmap(int32_t device, void* host_ptr, uint64_t size) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  const char* p = host_ptr;
  int found = 0;
  pthread_mutex_lock(&g_memory_mutex);
  for (size_t i = 0; i < g_allocation_count && !found; i++) {  // By alias, so a scan; unmap is rare.
    const emu_allocation_t* a = &g_allocations[i];
    found = a->device == device && p >= a->alias && p < a->alias + a->size &&
            size <= (uint64_t)(a->alias + a->size - p);
  }
  pthread_mutex_unlock(&g_memory_mutex);
  if (!found) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: memory_unmap(%d, %p, %llu): not a mapping of this device",
                    device, host_ptr, (unsigned long long)size);
  }
  return emu_ok();
}

// "Pinned" host memory is emulated: ordinary aligned memory, which the copies treat like any other.
static hal_status_t emu_host_allocate(uint64_t size, void** out_ptr) {
  if (out_ptr == NULL || size == 0) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: host_allocate needs size > 0 and out_ptr");
  }
  int err = posix_memalign(out_ptr, 256, size);
  if (err != 0) {
    return emu_fail_errno(HAL_STATUS_OUT_OF_MEMORY, err, "emu: host_allocate(%llu bytes)", (unsigned long long)size);
  }
  return emu_ok();
}

static hal_status_t emu_host_free(void* ptr) {
  free(ptr);
  return emu_ok();
}

// ======================================================================================================
// 5. The stream engine's view of emu, and the exported table
// ======================================================================================================
// The engine (devices/common/sw_stream.h) runs streams, events, the queued copies and the collectives; it
// reaches emu's errors, devices and memory only through this.

static double emu_speed(int32_t device) { return g_emu_devices[device].speed; }
static double emu_link_bytes_per_s(int32_t device) { return g_emu_devices[device].link_bytes_per_s; }

extern const sw_operator_t emu_operators[];

// emu's kernels (emu_ops.c, served by the engine) on the devices configured with ops=1; none on the others.
static hal_status_t emu_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (g_emu_devices[device].operators) return sw_op_list(device, out_ops, out_count);
  if (out_ops == NULL || out_count == NULL) return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: op_list: NULL output");
  *out_ops = NULL;
  *out_count = 0;
  return emu_ok();
}

static hal_status_t emu_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                                  const hal_tensor_t* results, uint64_t num_results) {
  hal_status_t status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  if (!g_emu_devices[sw_stream_device(stream)].operators) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: op_launch: device %d has no operators (configured ops=0)",
                    sw_stream_device(stream));
  }
  return sw_op_launch(stream, op, args, num_args, results, num_results);
}

const sw_plugin_t sw_plugin = {
    .name = "emu",
    .ok = emu_ok,
    .fail = emu_fail,
    .last_message = emu_last_message,
    .check_device = emu_check_device,
    .resolve = emu_resolve,
    .is_device_ptr = emu_is_device_ptr,
    .speed = emu_speed,
    .link_bytes_per_s = emu_link_bytes_per_s,
    .operators = emu_operators,  // emu_ops.c
};

// The "hal.topology" extension (hal/topology.h, ABI 1.2): each device reaches the host over its emulated host
// link, and every other emu device directly (peer copies are memcpy_peer_async, at the slower device's copy
// speed, as link_bandwidth says). Latencies are not emulated: 0, unknown.
static hal_status_t emu_device_links(int32_t device, hal_link_t* out_links, uint64_t capacity, uint64_t* out_count) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_count == NULL || (capacity > 0 && out_links == NULL)) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: device_links needs out_count (and out_links for capacity > 0)");
  }
  const emu_device_t* d = &g_emu_devices[device];
  uint64_t n = 0;
  const hal_link_t host = {HAL_LINK_PEER_HOST, HAL_LINK_KIND_PCIE, 0, 0,
                           d->link_bytes_per_s > 0 ? d->link_bytes_per_s : EMU_NOMINAL_HOST_LINK, 0};
  if (n < capacity) out_links[n] = host;
  ++n;
  for (int32_t peer = 0; peer < g_emu_device_count; ++peer) {
    if (peer == device) continue;
    const double speed = fmin(d->speed, g_emu_devices[peer].speed);
    const hal_link_t link = {peer, HAL_LINK_KIND_FABRIC, HAL_LINK_FLAG_PEER_ACCESS, 0,
                             EMU_NOMINAL_MEMORY_BANDWIDTH * speed, 0};
    if (n < capacity) out_links[n] = link;
    ++n;
  }
  *out_count = n;
  return emu_ok();
}

static const hal_topology_extension_t g_topology = {
    .base = {.struct_size = sizeof(hal_topology_extension_t), .name = HAL_TOPOLOGY_EXTENSION_NAME,
             .version = HAL_TOPOLOGY_EXTENSION_VERSION, .next = NULL},
    .device_links = emu_device_links,
};

static const hal_plugin_api_t g_api = {
    .struct_size = sizeof(hal_plugin_api_t),
    .abi_major = HAL_ABI_VERSION_MAJOR,
    .abi_minor = HAL_ABI_VERSION_MINOR,
    .name = "emu",
    .version = HAL_PLUGIN_VERSION,
    .initialize = emu_initialize,
    .shutdown = emu_shutdown,
    .get_last_error = emu_get_last_error,
    .device_count = emu_device_count,
    .device_get_properties = emu_device_get_properties,
    .device_get_memory_info = emu_device_get_memory_info,
    .memory_allocate = emu_memory_allocate,
    .memory_free = emu_memory_free,
    .stream_create = sw_stream_create,
    .stream_destroy = sw_stream_destroy,
    .stream_synchronize = sw_stream_synchronize,
    .stream_query = sw_stream_query,
    .stream_wait_event = sw_stream_wait_event,
    .event_create = sw_event_create,
    .event_destroy = sw_event_destroy,
    .event_record = sw_event_record,
    .event_synchronize = sw_event_synchronize,
    .event_query = sw_event_query,
    .event_elapsed_time = sw_event_elapsed_time,
    .memcpy_h2d_async = sw_memcpy_h2d_async,
    .memcpy_d2h_async = sw_memcpy_d2h_async,
    .memcpy_d2d_async = sw_memcpy_d2d_async,
    // Optional entries.
    .host_allocate = emu_host_allocate,
    .host_free = emu_host_free,
    .memcpy_peer_async = sw_memcpy_peer_async,
    .memset_async = sw_memset_async,
    .launch_host_func = sw_launch_host_func,
    .memory_map = emu_memory_map,
    .memory_unmap = emu_memory_unmap,
    // Collectives: the engine's shared-memory implementation (devices/common/sw_collective.c), between
    // processes of this host. A vendor puts its own collective library's calls here (as the CUDA plugin puts
    // NCCL's); these entries queue on the engine's streams, so they come with it.
    .comm_get_unique_id = sw_comm_get_unique_id,
    .comm_init_rank = sw_comm_init_rank,
    .comm_destroy = sw_comm_destroy,
    .comm_abort = sw_comm_abort,
    .allreduce = sw_allreduce,
    .allgather = sw_allgather,
    .reduce_scatter = sw_reduce_scatter,
    .broadcast = sw_broadcast,
    .send = sw_send,
    .recv = sw_recv,
    // Compute (ABI 1.1): emu's own kernels (emu_ops.c), queued by the engine (devices/common/sw_ops.c).
    .op_list = emu_op_list,
    .op_launch = emu_op_launch,
    // Extensions (ABI 1.2).
    .extensions = &g_topology.base,
};

HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
