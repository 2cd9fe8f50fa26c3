// The device allocator of the `hal` backend: HAL's caching allocator (runtime/allocator.h) as the
// c10::DeviceAllocator registered for PrivateUse1, its statistics in torch.cuda's layout, storage resizing,
// stream recording (Tensor.record_stream), and finding the device of a raw pointer.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/Stream.h>
#include <c10/core/StorageImpl.h>

#include <cstddef>

namespace hal::bridge {

// The c10::DeviceAllocator registered for PrivateUse1 (allocates on the current device, for its current stream).
c10::DeviceAllocator* device_allocator();
// |nbytes| of device memory on |index| (-1: the current device) for its current stream, from HAL's caching
// allocator, as a DataPtr that frees it. This is the allocation hot path: no lock but the allocator's, no heap
// context (the context is the allocation). Out of memory raises c10::OutOfMemoryError.
c10::DataPtr allocate_on(c10::DeviceIndex index, size_t nbytes);
// Notes that |stream| uses |data| (a DataPtr from allocate_on), so its block is not reused before the work
// queued on |stream| so far has run. Memory the bridge did not allocate is ignored.
void record_stream(const c10::DataPtr& data, const c10::Stream& stream);
// The hal device whose live allocation contains |ptr| (its start or an interior address). Throws otherwise.
c10::Device device_of_ptr(const void* ptr);
// Grows |storage| (a hal storage) to |nbytes|, keeping its contents (copied on the current stream).
void resize_storage_bytes(c10::StorageImpl* storage, size_t nbytes);

}  // namespace hal::bridge
