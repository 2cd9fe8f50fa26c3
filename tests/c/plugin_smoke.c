// plugin_smoke: a small conformance check of one HAL plugin, driven through the C ABI alone.
//
//   cc -std=c11 -O2 -Icsrc/include tests/c/plugin_smoke.c -o plugin_smoke -ldl -lpthread
//   ./plugin_smoke path/to/libhal_plugin_NAME.so [CONFIG]
//
// Loads the plugin the way the runtime does (dlopen + the entry symbol), initializes it with CONFIG, and
// checks on every device: properties (and the struct_size protocol), memory info, allocation, h2d/d2h/d2d
// copies with random data into poisoned buffers, ordering across two streams through an event, event
// timing, and the optional entries the plugin has (memset, host functions, mappings, peer copies).
// Prints one line per check and "N passed, M failed"; exits 0 only when nothing failed.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hal/hal.h"

static const hal_plugin_api_t* api;
static int passed, failed;

// Records one check; on failure prints the plugin's last error too (it explains most failures).
static int check(int ok, const char* what, int32_t device) {
  if (ok) {
    passed++;
    return 1;
  }
  char message[512] = "";
  api->get_last_error(message, sizeof(message), NULL);
  printf("FAIL [device %d] %s (last error: %s)\n", device, what, message[0] ? message : "<none>");
  failed++;
  return 0;
}

#define CHECK(cond, what) check((cond), (what), device)
#define CHECK_OK(call) check((call) == HAL_STATUS_OK, #call, device)

static void fill_random(uint8_t* p, size_t n, unsigned seed) {
  uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (size_t i = 0; i < n; i++) {  // xorshift64: fast and good enough to catch misplaced bytes.
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = (uint8_t)x;
  }
}

static void host_fn_set(void* flag) { *(volatile int*)flag = 1; }

static void host_fn_slow_set(void* flag) {
  struct timespec t = {0, 50 * 1000 * 1000};
  nanosleep(&t, NULL);
  *(volatile int*)flag = 1;
}

static void check_properties(int32_t device) {
  hal_device_properties_t p;
  memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  if (!CHECK_OK(api->device_get_properties(device, &p))) return;
  CHECK(p.name[0] != '\0' && memchr(p.name, 0, sizeof(p.name)) != NULL, "name is a non-empty string");
  CHECK(memchr(p.vendor, 0, sizeof(p.vendor)) != NULL, "vendor is NUL-terminated");
  CHECK(p.kind >= HAL_DEVICE_KIND_OTHER && p.kind <= HAL_DEVICE_KIND_NPU, "kind is known");
  CHECK(p.total_memory_bytes > 0, "total_memory_bytes > 0");
  int emulated = (p.flags & HAL_DEVICE_FLAG_EMULATED) != 0;
  CHECK(emulated ? p.relative_speed > 0 : p.relative_speed == 0, "relative_speed set iff emulated");
  printf("     [device %d] %s / %s, flags 0x%x, %.1f GiB\n", device, p.name, p.vendor, p.flags,
         (double)p.total_memory_bytes / (1 << 30));

  // An older caller's smaller struct: the plugin must not write past its struct_size.
  unsigned char raw[sizeof(hal_device_properties_t)];
  memset(raw, 0xEE, sizeof(raw));
  hal_device_properties_t* old = (hal_device_properties_t*)raw;
  old->struct_size = offsetof(hal_device_properties_t, kind);
  CHECK_OK(api->device_get_properties(device, old));
  int untouched = 1;
  for (size_t i = offsetof(hal_device_properties_t, kind); i < sizeof(raw); i++) untouched &= raw[i] == 0xEE;
  CHECK(untouched, "properties respects a smaller struct_size");
  CHECK(strcmp(old->name, p.name) == 0, "properties with a smaller struct_size still fills name");

  uint64_t free_bytes = 0, total_bytes = 0;
  if (CHECK_OK(api->device_get_memory_info(device, &free_bytes, &total_bytes))) {
    CHECK(total_bytes > 0 && free_bytes <= total_bytes, "memory info: 0 <= free <= total");
  }
}

static void check_device(int32_t device, int32_t device_count) {
  check_properties(device);
  hal_device_properties_t props;
  memset(&props, 0, sizeof(props));
  props.struct_size = sizeof(props);
  api->device_get_properties(device, &props);

  // Errors: a status, a message on this thread, and an empty message after the next success.
  void* bad = NULL;
  CHECK(api->memory_allocate(device, 0, &bad) == HAL_STATUS_INVALID_ARGUMENT, "allocate(0) is INVALID_ARGUMENT");
  CHECK(api->get_last_error(NULL, 0, NULL) > 0, "a failure leaves a message");

  const size_t n = (8u << 20) + 13;  // Odd on purpose: copies must not round sizes.
  void *a = NULL, *b = NULL;
  if (!CHECK_OK(api->memory_allocate(device, n, &a)) || !CHECK_OK(api->memory_allocate(device, n, &b))) return;
  CHECK(api->get_last_error(NULL, 0, NULL) == 0, "a success leaves the message empty");
  CHECK(((uintptr_t)a % 256) == 0 && ((uintptr_t)b % 256) == 0, "allocations are 256-byte aligned");

  uint8_t* src = malloc(n);
  uint8_t* dst = malloc(n);
  fill_random(src, n, (unsigned)device);
  hal_stream_t s1 = NULL, s2 = NULL;
  hal_event_t ready = NULL, start = NULL, end = NULL;
  if (!CHECK_OK(api->stream_create(device, &s1)) || !CHECK_OK(api->stream_create(device, &s2)) ||
      !CHECK_OK(api->event_create(device, 0, &ready)) ||
      !CHECK_OK(api->event_create(device, HAL_EVENT_FLAG_TIMING, &start)) ||
      !CHECK_OK(api->event_create(device, HAL_EVENT_FLAG_TIMING, &end))) {
    return;
  }
  CHECK(api->event_query(ready) == HAL_STATUS_OK, "an event never recorded is complete");
  CHECK(api->stream_query(s1) == HAL_STATUS_OK, "a new stream is idle");
  float ms = 0;
  CHECK(api->event_elapsed_time(start, end, &ms) == HAL_STATUS_INVALID_ARGUMENT,
        "elapsed time of unrecorded events is INVALID_ARGUMENT");

  // h2d -> d2d -> d2h on one stream, into a poisoned buffer.
  memset(dst, 0xCD, n);
  CHECK_OK(api->memcpy_h2d_async(s1, a, src, n));
  CHECK_OK(api->memcpy_d2d_async(s1, b, a, n));
  CHECK_OK(api->memcpy_d2h_async(s1, dst, b, n));
  CHECK_OK(api->stream_synchronize(s1));
  CHECK(memcmp(src, dst, n) == 0, "h2d -> d2d -> d2h round trip");
  CHECK_OK(api->memcpy_d2h_async(s1, dst, a, 0));  // Size 0 is a no-op that still orders.

  // Offsets inside an allocation are device pointers too.
  memset(dst, 0xCD, 4096);
  CHECK_OK(api->memcpy_d2h_async(s1, dst, (char*)b + 1000, 4096));
  CHECK_OK(api->stream_synchronize(s1));
  CHECK(memcmp(src + 1000, dst, 4096) == 0, "d2h from base + offset");

  // Two streams ordered by an event: s2 reads what s1 writes only because it waits for |ready|.
  fill_random(src, n, (unsigned)device + 100);
  memset(dst, 0xCD, n);
  CHECK_OK(api->memcpy_h2d_async(s1, a, src, n));
  CHECK_OK(api->event_record(ready, s1));
  CHECK_OK(api->stream_wait_event(s2, ready));
  CHECK_OK(api->memcpy_d2h_async(s2, dst, a, n));
  CHECK_OK(api->stream_synchronize(s2));
  CHECK(memcmp(src, dst, n) == 0, "stream_wait_event orders s2 after s1");
  CHECK_OK(api->event_synchronize(ready));
  CHECK(api->event_query(ready) == HAL_STATUS_OK, "event query after synchronize is OK");

  // Event timing around a copy.
  CHECK_OK(api->event_record(start, s1));
  CHECK_OK(api->memcpy_d2d_async(s1, b, a, n));
  CHECK_OK(api->event_record(end, s1));
  CHECK_OK(api->event_synchronize(end));
  CHECK_OK(api->event_synchronize(start));
  ms = -1;
  CHECK_OK(api->event_elapsed_time(start, end, &ms));
  CHECK(ms > 0, "elapsed time around an 8 MiB copy is positive");
  CHECK_OK(api->stream_synchronize(s1));
  CHECK(api->stream_query(s1) == HAL_STATUS_OK, "stream query after synchronize is OK");

  if (api->memset_async) {
    memset(dst, 0xCD, n);
    CHECK_OK(api->memset_async(s1, a, 0xAB, n));
    CHECK_OK(api->memcpy_d2h_async(s1, dst, a, n));
    CHECK_OK(api->stream_synchronize(s1));
    int all = 1;
    for (size_t i = 0; i < n; i++) all &= dst[i] == 0xAB;
    CHECK(all, "memset_async");
  }

  if (api->launch_host_func) {
    volatile int flag = 0;
    CHECK_OK(api->launch_host_func(s1, host_fn_slow_set, (void*)&flag));
    CHECK_OK(api->event_record(ready, s1));
    CHECK(api->event_query(ready) == HAL_STATUS_NOT_READY, "an event behind a 50 ms host function is NOT_READY");
    CHECK_OK(api->event_synchronize(ready));
    CHECK(flag == 1, "launch_host_func ran before the event completed");
    flag = 0;
    CHECK_OK(api->launch_host_func(s2, host_fn_set, (void*)&flag));
    CHECK_OK(api->stream_synchronize(s2));
    CHECK(flag == 1, "launch_host_func ran before synchronize returned");
  }

  if (api->memory_map && (props.flags & HAL_DEVICE_FLAG_MAPPABLE)) {
    fill_random(src, n, (unsigned)device + 200);
    CHECK_OK(api->memcpy_h2d_async(s1, a, src, n));
    CHECK_OK(api->stream_synchronize(s1));
    uint8_t* host = NULL;
    if (CHECK_OK(api->memory_map(device, (char*)a + 256, n - 256, (void**)&host))) {
      CHECK(memcmp(host, src + 256, n - 256) == 0, "memory_map sees data written by h2d");
      memset(host, 0x5A, 1024);  // Host writes through the mapping are seen by device copies.
      memset(dst, 0xCD, 1024);
      CHECK_OK(api->memcpy_d2h_async(s1, dst, (char*)a + 256, 1024));
      CHECK_OK(api->stream_synchronize(s1));
      int all = 1;
      for (int i = 0; i < 1024; i++) all &= dst[i] == 0x5A;
      CHECK(all, "device copies see host writes through memory_map");
      CHECK_OK(api->memory_unmap(device, host, n - 256));
    }
  }

  if (api->memcpy_peer_async && device_count > 1) {
    int32_t peer = (device + 1) % device_count;
    void* c = NULL;
    if (CHECK_OK(api->memory_allocate(peer, n, &c))) {
      fill_random(src, n, (unsigned)device + 300);
      memset(dst, 0xCD, n);
      CHECK_OK(api->memcpy_h2d_async(s1, a, src, n));
      CHECK_OK(api->memcpy_peer_async(s1, c, peer, a, device, n));
      CHECK_OK(api->stream_synchronize(s1));
      hal_stream_t ps = NULL;
      if (CHECK_OK(api->stream_create(peer, &ps))) {
        CHECK_OK(api->memcpy_d2h_async(ps, dst, c, n));
        CHECK_OK(api->stream_synchronize(ps));
        CHECK(memcmp(src, dst, n) == 0, "memcpy_peer_async to the next device");
        CHECK_OK(api->stream_destroy(ps));
      }
      CHECK_OK(api->memory_free(peer, c));
    }
  }

  CHECK_OK(api->event_destroy(ready));
  CHECK_OK(api->event_destroy(start));
  CHECK_OK(api->event_destroy(end));
  CHECK_OK(api->stream_destroy(s1));
  CHECK_OK(api->stream_destroy(s2));
  CHECK_OK(api->memory_free(device, a));
  CHECK_OK(api->memory_free(device, b));
  int on_stack;
  CHECK(api->memory_free(device, &on_stack) == HAL_STATUS_INVALID_ARGUMENT,
        "freeing memory the plugin did not allocate is INVALID_ARGUMENT");
  free(src);
  free(dst);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PLUGIN.so [CONFIG]\n", argv[0]);
    return 2;
  }
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  hal_plugin_get_api_fn get_api = (hal_plugin_get_api_fn)dlsym(library, HAL_PLUGIN_ENTRY_SYMBOL);
  if (get_api == NULL || (api = get_api()) == NULL) {
    fprintf(stderr, "%s exports no %s\n", argv[1], HAL_PLUGIN_ENTRY_SYMBOL);
    return 2;
  }
  int32_t device = -1;  // For CHECK outside a device.
  if (!CHECK(api->abi_major == HAL_ABI_VERSION_MAJOR, "ABI major version matches") ||
      !CHECK(api->struct_size >= offsetof(hal_plugin_api_t, host_allocate), "table holds every required entry")) {
    printf("%d passed, %d failed\n", passed, failed);
    return 1;
  }
  CHECK(api->name != NULL && api->name[0] && strspn(api->name, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
        strlen(api->name), "name is [a-z0-9_]+");
  CHECK(api->version != NULL, "version is set");
  // Every required entry: the function pointers from initialize through memcpy_d2d_async.
  const size_t first = offsetof(hal_plugin_api_t, initialize), last = offsetof(hal_plugin_api_t, host_allocate);
  int all_present = 1;
  for (size_t offset = first; offset < last; offset += sizeof(void*)) {
    void* entry;
    memcpy(&entry, (const char*)api + offset, sizeof(entry));
    all_present &= entry != NULL;
  }
  if (!CHECK(all_present, "every required entry is present")) return 1;
  int pairs = (api->host_allocate == NULL) == (api->host_free == NULL) &&
              (api->memory_map == NULL) == (api->memory_unmap == NULL);
  CHECK(pairs, "host_allocate/host_free and memory_map/memory_unmap come in pairs");

  hal_plugin_init_args_t args = {sizeof(args), HAL_ABI_VERSION_MAJOR, HAL_ABI_VERSION_MINOR,
                                 argc > 2 ? argv[2] : NULL};
  if (!CHECK_OK(api->initialize(&args))) {
    printf("%d passed, %d failed\n", passed, failed);
    return 1;
  }
  int32_t count = 0;
  CHECK_OK(api->device_count(&count));
  CHECK(count > 0, "at least one device");
  printf("     %s %s: %d device(s)\n", api->name, api->version, count);
  for (device = 0; device < count; device++) check_device(device, count);
  device = -1;
  CHECK(api->memory_allocate(count, 1, &(void*){NULL}) == HAL_STATUS_INVALID_ARGUMENT,
        "an unknown device index is INVALID_ARGUMENT");

  if (api->host_allocate) {
    void* pinned = NULL;
    if (CHECK_OK(api->host_allocate(1 << 20, &pinned))) {
      memset(pinned, 1, 1 << 20);  // Host-addressable by contract.
      CHECK_OK(api->host_free(pinned));
    }
  }
  api->shutdown();
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
