// HAL plugin ABI 1.2: extensions, optional features that grow without costing a minor version each (after
// PJRT's PJRT_Extension_Base).
//
// A plugin lists its extensions in one chain: hal_plugin_api_t.extensions points to the first, each header's
// |next| to the following one, NULL ends it. Each extension is a struct that BEGINS with a hal_extension_t
// and goes on with its own fields (usually function pointers), defined in the extension's own header
// (topology.h is the first). The chain, its structs and the names belong to the plugin and stay valid (and
// unchanged) until the library is unloaded.
//
// Rules.
//  - |name| says what the extension is: "hal.<feature>" for those defined in HAL's headers, "<vendor>.<feature>"
//    for a vendor's own; [a-z0-9_.]+, unique within a chain. A caller skips names it does not know.
//  - |version| starts at 1. A new version may only append fields to the extension's struct (as minor versions
//    do to the table); |struct_size| (sizeof the whole struct as the plugin compiled it) says how far the
//    plugin's struct goes, and a caller reads a field only when struct_size covers it. A change that is not an
//    append is a new name.
//  - The loader reads the chain once, at load, and refuses a plugin whose chain is malformed (a header with
//    struct_size below sizeof(hal_extension_t), a NULL or invalid name, version 0, a name twice, a cycle, more
//    than HAL_EXTENSIONS_MAX links), naming the link at fault.
//  - The functions of an extension follow the table's rules: thread-safe unless said otherwise, a status
//    return, the message through get_last_error.
#ifndef HAL_EXTENSION_H_
#define HAL_EXTENSION_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The most links a chain may have (a longer one is taken for a cycle).
#define HAL_EXTENSIONS_MAX 64

typedef struct hal_extension_t {
  size_t struct_size;                   // sizeof the whole extension struct, this header included.
  const char* name;                     // "hal.topology"; see the rules above.
  uint32_t version;                     // >= 1.
  uint32_t reserved;                    // 0.
  const struct hal_extension_t* next;   // The next extension, or NULL.
} hal_extension_t;

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_EXTENSION_H_
