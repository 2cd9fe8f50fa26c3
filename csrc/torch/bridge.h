// The torch bridge: every HAL device is torch device `hal:N` (PrivateUse1 renamed to "hal"), N being HAL's
// global device index (hal.devices()[N]); a tensor's data pointer is the plugin's device pointer, never a host
// alias. One file pair per concept, each looking only down (to the runtime and to the parts above it here):
//
//   runtime_access    the shared hal::Runtime, devices by torch index, the current device, fork safety,
//                     hal::Error -> c10::Error (translate)
//   streams           current / default / pooled streams and c10::Stream conversion
//   guard             c10's DeviceGuardImplInterface: device, streams, events
//   device_allocator  HAL's caching allocator as torch's DeviceAllocator; statistics, resize, record_stream
//   host_allocator    pinned host memory
//   generator         per-device generators carrying CPU generator state
//   hooks             PrivateUse1HooksInterface, and registering hooks and allocator
//   host_access       host mappings of device memory, CPU tensors aliasing hal tensors
//   factories         native factories and view kernels (empty, as_strided, view, resize_, set_)
//   copies            native copies (_copy_from, _local_scalar_dense), math bits included
//   fallback          the boxed fallback: every other op, routed to the plugin's kernel (operators), else its
//                     CPU (or, for views, Meta) kernel
//   operators         native operators: calls boxed for the plugin's kernels (ABI 1.1); per-op statistics
//   decompositions    ops the plugin lacks, run as PyTorch's decompositions into ops it has
//   emulation         pacing of emulated devices slower than the host
//   backend_kernels   kernels for ops torch routes to a backend of their own (convolution_overrideable, LSTM/GRU cells)
//   module.cpp        the Python module hal._torch_C (bindings only)
//
// Errors: every hal::Error becomes a c10::Error (translate) with the runtime's message, so Python sees a
// RuntimeError naming plugin, device and call (torch.OutOfMemoryError for out of memory).
//
// Native kernels for a chip include this header for the whole API (docs/torch.md, "Adding native kernels").
#pragma once

#include "copies.h"
#include "device_allocator.h"
#include "fallback.h"
#include "host_access.h"
#include "operators.h"
#include "runtime_access.h"
#include "streams.h"
