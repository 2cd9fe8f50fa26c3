// Copies of the `hal` backend: the native _copy_from kernels (host <-> device, device <-> device, across
// devices and plugins; any strides, dtypes, broadcasting and conjugate / negative bits) and _local_scalar_dense.
//
// Host buffers of queued copies. A copy queued on a stream (non_blocking=True) keeps the host memory it reads or
// writes alive until it ran (a host function on the stream holds the tensor), so dropping the destination of a
// non-blocking device->host copy, or the temporary source of a host->device one, never frees memory the stream
// still uses. As with CUDA's pinned memory, the caller must not read the destination (or change the source)
// before synchronizing. Without the plugin's launch_host_func such copies complete before they return.
#pragma once

#include <ATen/core/Tensor.h>

namespace hal::bridge {

// The values of hal tensor |src| as a new contiguous CPU tensor without math bits. Synchronous.
at::Tensor read_to_host(const at::Tensor& src);
// Writes the values of CPU tensor |host| (any dtype, broadcastable to dst, any math bits) into hal tensor |dst|.
void write_from_host(const at::Tensor& dst, const at::Tensor& host, bool non_blocking);

}  // namespace hal::bridge
