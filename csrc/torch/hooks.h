// The PrivateUse1 hooks of the `hal` backend (at::PrivateUse1HooksInterface: device count, current device,
// generators, pinned memory, pointer lookup, storage resize) and the registration of hooks and allocator.
#pragma once

namespace hal::bridge {

// Registers the hooks and the device allocator with torch. Idempotent; called when hal._torch_C loads.
void register_backend();

}  // namespace hal::bridge
