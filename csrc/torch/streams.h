// Streams as torch sees them: the calling thread's current stream per device (the runtime's, shared with the
// hal Python API), the default stream, a pool for torch's getNewStream, and conversion to and from c10::Stream
// (a c10 StreamId is hal::Stream::id()).
#pragma once

#include <c10/core/Stream.h>

#include <cstdint>

#include "runtime/stream.h"

namespace hal::bridge {

// The calling thread's current stream on |index| (-1: the current device); the default stream unless set.
// This per-thread current stream is THE current stream of HAL in a process with torch: torch.hal,
// torch.accelerator and the hal Python API (hal.current_stream / hal.stream) all read and set it.
Stream current_stream(c10::DeviceIndex index);
// The default stream (id 0) of |index|.
Stream default_stream(c10::DeviceIndex index);
// Makes |stream| the calling thread's current stream on its device; returns the previous one.
Stream exchange_stream(const Stream& stream);
// The stream with |id| (Stream::id(), what torch stores as a StreamId) on |index|; throws for an unknown id.
Stream stream_of(c10::DeviceIndex index, int64_t id);
// One of a fixed pool of streams of |index|, handed out round robin (torch's getNewStream / stream pool).
Stream pooled_stream(c10::DeviceIndex index);

c10::Stream to_c10(const Stream& stream);
Stream from_c10(const c10::Stream& stream);

}  // namespace hal::bridge
