// HAL extension "hal.topology", version 1 (extension.h): which devices of a plugin reach which, over what
// link, how fast, and which are reached from the host how fast. For the planner (placement, the cost of a
// collective's ring) and for collectives (whether peer copies are direct).
//
// A plugin that knows nothing about its links leaves the extension out: the runtime then assumes every
// pair of its devices is staged through the host (hal_device_properties_t's figures are all there is).
#ifndef HAL_TOPOLOGY_H_
#define HAL_TOPOLOGY_H_

#include "hal/extension.h"
#include "hal/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAL_TOPOLOGY_EXTENSION_NAME "hal.topology"
#define HAL_TOPOLOGY_EXTENSION_VERSION 1

// What carries a link. Values are fixed forever; later versions add values.
typedef enum hal_link_kind_e {
  HAL_LINK_KIND_OTHER = 0,
  HAL_LINK_KIND_SAME_MEMORY = 1,  // Both ends address the same memory (the host and a CPU device).
  HAL_LINK_KIND_PCIE = 2,         // PCI Express (or an emulation of a host link).
  HAL_LINK_KIND_FABRIC = 3,       // A dedicated device-to-device link: NVLink, Infinity Fabric, HCCS, ...
  HAL_LINK_KIND_HOST_STAGED = 4,  // No direct path: copies go through host memory.
  HAL_LINK_KIND_NETWORK = 5,      // A network between hosts (RDMA, Ethernet).
} hal_link_kind_e;
typedef int32_t hal_link_kind_t;

// Bits of hal_link_t.flags.
enum {
  // The device can reach the peer's memory directly: memcpy_peer_async between the two does not stage
  // through the host (and, for GPUs, kernels may dereference the peer's pointers).
  HAL_LINK_FLAG_PEER_ACCESS = 1u << 0,
};

// The host, as a link's peer.
#define HAL_LINK_PEER_HOST (-1)

// One link from a device. Bandwidth and latency describe one direction, from the device to |peer|; 0 means
// unknown. For emulated devices (HAL_DEVICE_FLAG_EMULATED) they describe the emulation.
typedef struct hal_link_t {
  int32_t peer;            // A local device index of this plugin, or HAL_LINK_PEER_HOST.
  hal_link_kind_t kind;
  uint32_t flags;          // HAL_LINK_FLAG_* bits.
  uint32_t reserved;       // 0.
  double bandwidth;        // bytes/s
  double latency;          // seconds
} hal_link_t;

// Writes the links of local device |device|: at most |capacity| of them to |out_links| (which may be NULL
// when |capacity| is 0), and the number it has to |out_count|, so a caller can size a second call. At most
// one link per peer; none to the device itself. Thread-safe; does not block on device work.
typedef hal_status_t (*hal_topology_device_links_fn)(int32_t device, hal_link_t* out_links, uint64_t capacity,
                                                     uint64_t* out_count);

typedef struct hal_topology_extension_t {
  hal_extension_t base;  // name HAL_TOPOLOGY_EXTENSION_NAME, version HAL_TOPOLOGY_EXTENSION_VERSION
  // --- version 1 ---
  hal_topology_device_links_fn device_links;
} hal_topology_extension_t;

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_TOPOLOGY_H_
