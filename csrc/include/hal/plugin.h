// HAL plugin ABI: the one table a plugin exports.
//
// A plugin is a shared library that exports one C symbol, HAL_PLUGIN_ENTRY_SYMBOL:
//
//     HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void);
//
// It returns a pointer to a table of function pointers that lives as long as the library is loaded. The
// call must be cheap and must not touch any device: the loader calls it to read versions and entries
// before it decides to use the plugin; device work starts with |initialize|.
//
// Versioning. The table starts with its own size and the ABI version the plugin was built against.
//  - The table only ever grows at the end. A new minor version appends entries; a new major version may
//    change anything.
//  - The loader accepts a plugin whose major equals its own and whose minor is at least the minimum it
//    needs, and refuses any other, naming the plugin's path and both versions.
//  - An entry lies beyond the end of an older plugin's table when its offset is not below struct_size; the
//    loader reads it as NULL. A newer plugin's extra entries are ignored by an older loader.
//  - Argument structs that may grow (hal_device_properties_t, hal_plugin_init_args_t, hal_comm_config_t)
//    begin with struct_size set by the caller; see HAL_STRUCT_HAS_FIELD.
//
// Required and optional entries. Every entry up to and including memcpy_d2d_async is required: the
// loader refuses a plugin where any is NULL and names the missing entries. The entries after it are
// optional: NULL means "not supported" and HAL reports it as such (or falls back, e.g. staging peer
// copies through the host). The compute entries of ABI 1.1 come in groups (kernel.h) that a plugin has
// whole or not at all; the loader refuses half a group. An entry that is present but cannot work on some device returns
// HAL_STATUS_UNIMPLEMENTED.
//
// Threading. Unless its comment says otherwise, every entry may be called from any thread at the same time
// as any other entry, except initialize and shutdown, which the loader calls once each, alone.
//
// Ownership. Handles (streams, events, communicators) and allocations belong to the caller that created
// them and must be released through the matching entry before shutdown. Strings and tables returned by
// the plugin belong to the plugin and stay valid until the library is unloaded.
#ifndef HAL_PLUGIN_H_
#define HAL_PLUGIN_H_

#include "hal/collective.h"
#include "hal/extension.h"
#include "hal/kernel.h"

#ifdef __cplusplus
extern "C" {
#endif

// ABI changelog (the rules for what a minor may add and what needs a major: docs/plugin-sdk.md, "ABI versions").
//   1.0  devices, memory, streams, events, copies; optional pinned memory, peer copies, memset, host
//        functions, mappings and collectives (collective.h). No compute.
//   1.1  appends the compute entries of kernel.h (operators; programs and kernels) and the dtypes from
//        HAL_DTYPE_BOOL on (device.h). Nothing of 1.0 changed.
//   1.2  appends |extensions|, a chain of named, versioned extension structs (extension.h), and the first
//        extension, "hal.topology" (topology.h). Optional features come as extensions from now on: a new one
//        (or a new version of one) needs no new minor version. Nothing of 1.1 changed.
#define HAL_ABI_VERSION_MAJOR 1
#define HAL_ABI_VERSION_MINOR 2

#define HAL_PLUGIN_ENTRY_SYMBOL "hal_plugin_get_api"

#if defined(_WIN32)
#define HAL_PLUGIN_EXPORT __declspec(dllexport)
#else
#define HAL_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

// Arguments of initialize. Grows only at the end; the loader sets struct_size.
typedef struct hal_plugin_init_args_t {
  size_t struct_size;
  uint32_t loader_abi_major;  // The ABI version the loader was built against.
  uint32_t loader_abi_minor;
  // Plugin-specific configuration text (NUL-terminated), or NULL for none. The emu plugin, for instance,
  // reads its device list from it. Only valid during the call.
  const char* config;
} hal_plugin_init_args_t;

// Prepares the plugin for use. Called once, before any other entry but get_last_error. May block.
typedef hal_status_t (*hal_initialize_fn)(const hal_plugin_init_args_t* args);
// Releases everything the plugin holds. Called once, last; every handle and allocation has been released.
typedef void (*hal_shutdown_fn)(void);

typedef struct hal_plugin_api_t {
  size_t struct_size;     // sizeof(hal_plugin_api_t) as the plugin was compiled.
  uint32_t abi_major;     // HAL_ABI_VERSION_MAJOR as the plugin was compiled.
  uint32_t abi_minor;     // HAL_ABI_VERSION_MINOR as the plugin was compiled.
  const char* name;       // Short lowercase name, used in device names ("emu" -> "emu:0"). [a-z0-9_]+
  const char* version;    // The plugin's own version, free form ("0.3.1").

  // --- Required (ABI 1.0) ---
  hal_initialize_fn initialize;
  hal_shutdown_fn shutdown;
  hal_get_last_error_fn get_last_error;

  hal_device_count_fn device_count;
  hal_device_get_properties_fn device_get_properties;
  hal_device_get_memory_info_fn device_get_memory_info;

  hal_memory_allocate_fn memory_allocate;
  hal_memory_free_fn memory_free;

  hal_stream_create_fn stream_create;
  hal_stream_destroy_fn stream_destroy;
  hal_stream_synchronize_fn stream_synchronize;
  hal_stream_query_fn stream_query;
  hal_stream_wait_event_fn stream_wait_event;

  hal_event_create_fn event_create;
  hal_event_destroy_fn event_destroy;
  hal_event_record_fn event_record;
  hal_event_synchronize_fn event_synchronize;
  hal_event_query_fn event_query;
  hal_event_elapsed_time_fn event_elapsed_time;

  hal_memcpy_h2d_async_fn memcpy_h2d_async;
  hal_memcpy_d2h_async_fn memcpy_d2h_async;
  hal_memcpy_d2d_async_fn memcpy_d2d_async;  // Last required entry.

  // --- Optional (ABI 1.0): NULL = not supported ---
  hal_host_allocate_fn host_allocate;
  hal_host_free_fn host_free;
  hal_memcpy_peer_async_fn memcpy_peer_async;
  hal_memset_async_fn memset_async;
  hal_launch_host_func_fn launch_host_func;
  hal_memory_map_fn memory_map;
  hal_memory_unmap_fn memory_unmap;

  // Collectives (see collective.h for which must come together).
  hal_comm_get_unique_id_fn comm_get_unique_id;
  hal_comm_init_rank_fn comm_init_rank;
  hal_comm_destroy_fn comm_destroy;
  hal_comm_abort_fn comm_abort;
  hal_allreduce_fn allreduce;
  hal_allgather_fn allgather;
  hal_reduce_scatter_fn reduce_scatter;
  hal_broadcast_fn broadcast;
  hal_send_fn send;
  hal_recv_fn recv;

  // --- Optional (ABI 1.1): compute (kernel.h; each group all or none) ---
  // Operators.
  hal_op_list_fn op_list;
  hal_op_launch_fn op_launch;
  // Programs and kernels.
  hal_program_create_fn program_create;
  hal_program_destroy_fn program_destroy;
  hal_kernel_create_fn kernel_create;
  hal_kernel_destroy_fn kernel_destroy;
  hal_kernel_launch_fn kernel_launch;

  // --- ABI 1.2 ---
  // The plugin's extensions (extension.h), or NULL for none. Data, not an entry: never required. New optional
  // features are extensions in this chain rather than entries of the table.
  const hal_extension_t* extensions;

  // New entries of later minor versions go here, at the end.
} hal_plugin_api_t;

// The type of the exported entry symbol.
typedef const hal_plugin_api_t* (*hal_plugin_get_api_fn)(void);

// The entry symbol, which every plugin defines, once, exported:
//     HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
// This declaration gives the definition a prototype (-Wmissing-prototypes) and checks its type; it leaves
// the symbol's visibility to the definition, so only HAL_PLUGIN_EXPORT exports it. A loader finds it with
// dlsym(handle, HAL_PLUGIN_ENTRY_SYMBOL) and never calls this declaration.
const hal_plugin_api_t* hal_plugin_get_api(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_PLUGIN_H_
