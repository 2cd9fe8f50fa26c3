// hal::device_links: the links of a device, as its plugin declares them in the "hal.topology" extension
// (hal/topology.h, ABI 1.2), in the runtime's terms: peers by device name and global index.
#ifndef HAL_RUNTIME_TOPOLOGY_H_
#define HAL_RUNTIME_TOPOLOGY_H_

#include <optional>
#include <string>
#include <vector>

#include "hal/hal.h"

namespace hal {

class Device;

struct Link {
  std::string peer;       // The peer's device name ("emu:1"), or "host".
  int peer_index = -1;    // The peer's global device index; -1 for the host.
  std::string kind;       // link_kind_name()
  bool peer_access = false;  // HAL_LINK_FLAG_PEER_ACCESS
  double bandwidth = 0;   // bytes/s, from the device to the peer; 0 = unknown.
  double latency = 0;     // seconds; 0 = unknown.
};

// "same_memory", "pcie", "fabric", "host_staged", "network", "other" (for unknown values too).
const char* link_kind_name(hal_link_kind_t kind);

// The links of |device|, or nullopt when its plugin has no "hal.topology" extension (nothing is known). Links
// to devices that are not visible (HAL_VISIBLE_DEVICES) are left out. Throws the plugin's error.
std::optional<std::vector<Link>> device_links(const Device& device);

}  // namespace hal

#endif  // HAL_RUNTIME_TOPOLOGY_H_
