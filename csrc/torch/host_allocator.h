// The host (pinned) allocator of the `hal` backend: torch's pin_memory / empty(pin_memory=True). Memory comes
// from the current device's plugin host_allocate when it has one, else plain aligned host memory.
#pragma once

#include <c10/core/Allocator.h>

namespace hal::bridge {

c10::Allocator* pinned_allocator();
// Whether |ptr| lies inside a live block of pinned_allocator() (interior pointers count).
bool is_pinned(const void* ptr);

}  // namespace hal::bridge
