#include "runtime/topology.h"

#include <algorithm>
#include <utility>

#include "runtime/device.h"
#include "runtime/registry.h"

namespace hal {

const char* link_kind_name(hal_link_kind_t kind) {
  switch (kind) {
    case HAL_LINK_KIND_SAME_MEMORY: return "same_memory";
    case HAL_LINK_KIND_PCIE: return "pcie";
    case HAL_LINK_KIND_FABRIC: return "fabric";
    case HAL_LINK_KIND_HOST_STAGED: return "host_staged";
    case HAL_LINK_KIND_NETWORK: return "network";
    default: return "other";
  }
}

std::optional<std::vector<Link>> device_links(const Device& device) {
  const Plugin& plugin = device.plugin();
  plugin.api();  // A closed runtime says so.
  const auto* topology = plugin.find_extension<hal_topology_extension_t>(HAL_TOPOLOGY_EXTENSION_NAME, 1);
  if (topology == nullptr || topology->device_links == nullptr) return std::nullopt;
  std::vector<hal_link_t> raw;
  uint64_t count = 0;
  plugin.check(topology->device_links(device.local_index(), nullptr, 0, &count), "hal.topology device_links",
               device.name());
  raw.resize(count);
  plugin.check(topology->device_links(device.local_index(), raw.data(), raw.size(), &count),
               "hal.topology device_links", device.name());
  raw.resize(std::min<uint64_t>(count, raw.size()));

  std::vector<Link> links;
  for (const hal_link_t& l : raw) {
    Link link;
    if (l.peer == HAL_LINK_PEER_HOST) {
      link.peer = "host";
    } else {
      const Device* peer = nullptr;
      if (Runtime* runtime = Runtime::instance()) {
        for (const Device* d : runtime->devices()) {
          if (&d->plugin() == &plugin && d->local_index() == l.peer) peer = d;
        }
      }
      if (peer == nullptr || peer == &device) continue;  // Not visible (or the device itself).
      link.peer = peer->name();
      link.peer_index = peer->index();
    }
    link.kind = link_kind_name(l.kind);
    link.peer_access = (l.flags & HAL_LINK_FLAG_PEER_ACCESS) != 0;
    link.bandwidth = l.bandwidth;
    link.latency = l.latency;
    links.push_back(std::move(link));
  }
  return links;
}

}  // namespace hal
