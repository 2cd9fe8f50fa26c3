// hal::Allocator: a per-device caching allocator over the plugin's memory_allocate / memory_free, after
// PyTorch's CUDACachingAllocator.
//
// Why: plugin allocators may block and synchronize; frameworks allocate and free on every op. The
// allocator keeps freed memory in pools and hands it out again without calling the plugin.
//
// Design.
//  - Sizes are rounded up to kRoundBytes (512). Requests of at most kSmallRequest (1 MiB) come from the
//    small pool, carved out of kSmallSegment (2 MiB) segments; larger requests from the large pool, whose
//    segments are the request rounded up to kLargeSegmentRound (2 MiB).
//  - A segment is one plugin allocation, split into blocks linked in address order. A cached block is
//    found by best fit (smallest block >= the request) among free blocks of the same pool AND the same
//    stream; if the remainder is big enough (>= 512 B small, > 1 MiB large) the block is split.
//  - Freeing merges the block with free neighbours of its segment and returns it to its pool.
//  - Streams: a block belongs to the stream it was allocated on and is reused only for requests on that
//    stream, so stream order makes reuse safe without synchronization. record_stream(ptr, other) notes
//    that another stream uses the block: at free, an event is recorded on each such stream, and the block
//    returns to the pool only once all those events have completed (polled at later allocations and at
//    empty_cache). A block freed on one stream is thus never handed out before every stream that used it
//    has passed the free.
//  - Streams go away (stream.h): before a stream is destroyed, its record_stream uses become events recorded
//    on it, which frees wait for as for any other use; once its queued work has finished, its blocks belong
//    to no stream, and the first request to reuse such a segment makes it its own stream's. So no block
//    refers to a destroyed stream, and memory freed with work still queued is not reused before that work.
//  - Out of memory: when the plugin answers HAL_STATUS_OUT_OF_MEMORY, the allocator releases its cached
//    segments (empty_cache) and retries once; if that fails too it throws Error(HAL_STATUS_OUT_OF_MEMORY):
//    "emu:1: out of memory: tried to allocate 3.00 GiB (3221225472 bytes); 1.50 GiB in use, 512.00 MiB
//    cached, 4.00 GiB capacity" (+ the plugin's message). A request above kMaxRequest, which no size
//    arithmetic (rounding, segments, statistics) could hold, gets the same error without a plugin call.
//  - empty_cache releases every fully free segment. memory_free requires that no queued work uses the
//    memory, so it synchronizes the device first (without holding the allocator's lock).
//
// Threading: thread-safe; one mutex per allocator. The lock is not held while synchronizing.
// Lifetime: owned by its Device and never freed (registry.h); after Runtime::shutdown, free() is a no-op
// and allocate() throws.
#ifndef HAL_RUNTIME_ALLOCATOR_H_
#define HAL_RUNTIME_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hal/hal.h"
#include "runtime/stream.h"

namespace hal {

class Device;

inline constexpr size_t kRoundBytes = 512;
inline constexpr size_t kSmallRequest = size_t{1} << 20;       // 1 MiB
inline constexpr size_t kSmallSegment = size_t{2} << 20;       // 2 MiB
inline constexpr size_t kLargeSegmentRound = size_t{2} << 20;  // 2 MiB
// The largest request: its segment (rounded up to kLargeSegmentRound) still fits size_t and int64 statistics.
inline constexpr size_t kMaxRequest = size_t{INT64_MAX} / kLargeSegmentRound * kLargeSegmentRound;

struct AllocatorStats {
  int64_t allocated_bytes = 0;       // Bytes of live blocks (rounded sizes).
  int64_t allocated_bytes_peak = 0;
  int64_t reserved_bytes = 0;        // Bytes of segments held from the plugin.
  int64_t reserved_bytes_peak = 0;
  int64_t active_blocks = 0;         // Live blocks (allocated, or freed but waiting on other streams).
  int64_t allocated_blocks = 0;      // Allocated blocks (not freed yet).
  int64_t segments = 0;              // Segments held from the plugin.
  int64_t num_allocs = 0;            // Successful allocate() calls with nbytes > 0.
  int64_t num_frees = 0;
  int64_t num_raw_allocs = 0;        // Plugin memory_allocate calls that succeeded.
  int64_t num_raw_frees = 0;
  int64_t num_ooms = 0;              // Allocations that failed with out of memory.
  int64_t num_cache_hits = 0;        // Allocations served from a cached block.
  int64_t num_alloc_retries = 0;     // Allocations that hit out of memory, emptied the cache and retried.

  // (name, value) in declaration order, for bindings and printing.
  std::vector<std::pair<const char*, int64_t>> items() const;
};

class Allocator {
 public:
  explicit Allocator(Device& device);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Returns |nbytes| of device memory usable on |stream| (aligned as the plugin aligns, >= 256 B), or
  // nullptr for nbytes == 0 (without calling the plugin). Throws Error (OUT_OF_MEMORY, see above).
  void* allocate(size_t nbytes, const Stream& stream);
  // Frees a pointer allocate() returned; nullptr is ignored. Throws HAL_STATUS_INVALID_ARGUMENT for a
  // pointer this allocator does not own (e.g. a double free). A no-op after Runtime::shutdown.
  void free(void* ptr);
  // Marks |ptr| (from allocate) as used by |stream| too; see "Streams" above. Its allocation stream is
  // ignored. Throws HAL_STATUS_INVALID_ARGUMENT for an unknown pointer.
  void record_stream(void* ptr, const Stream& stream);
  // The size allocate() reserved for |ptr| (rounded), or 0 if unknown.
  size_t allocation_size(void* ptr) const;
  // The live allocation that contains |ptr| (its start, or any address inside it, such as a view's data
  // pointer): (start, rounded size), or (nullptr, 0) when |ptr| lies in no allocated block. A start pointer
  // is found in O(1); an interior pointer by walking the blocks of every segment (linear: meant for rare
  // queries such as torch's getDeviceFromPtr, not for hot paths).
  std::pair<void*, size_t> find_allocation(const void* ptr) const;

  // Releases every fully free cached segment to the plugin (see above).
  void empty_cache();
  // Appends the base pointer of every segment held from the plugin to |out| (the validation layer's leak
  // report: these are the cache, not leaks). With |wait| false, gives up and returns false when the lock is
  // taken (at exit another thread may be inside).
  bool segment_bases(std::vector<const void*>* out, bool wait) const;
  AllocatorStats stats() const;
  // Sets the peaks to the current values.
  void reset_peak_stats();
  // Sets the accumulated counters (num_allocs, num_frees, num_raw_allocs, num_raw_frees, num_ooms,
  // num_cache_hits, num_alloc_retries) to 0. Current values (bytes, blocks, segments) and peaks are kept.
  void reset_accumulated_stats();

  // Direct plugin memory_allocate / memory_free, bypassing the cache (benchmarks, tests). Not counted
  // in stats. raw_allocate(0) returns nullptr.
  void* raw_allocate(size_t nbytes);
  void raw_free(void* ptr);

  // Called as |stream| is destroyed (stream.cpp; see "Streams go away" above): before stream_destroy,
  // and after it (its queued work has finished). Best effort.
  void stream_destroying(StreamState* stream) noexcept;
  void stream_destroyed(StreamState* stream) noexcept;

 private:
  struct Block;
  struct BlockLess {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BlockLess>;
  struct PendingFree {
    Block* block;
    std::vector<hal_event_t> events;
  };

  Block* find_free_block(Pool& pool, StreamState* stream, size_t size);
  void adopt_segment(Pool& pool, Block* taken, StreamState* stream);  // Lock held.
  Block* split(Pool& pool, Block* block, size_t size);
  void return_block(Block* block);            // Merges and inserts into its pool. Lock held.
  void process_pending();                      // Returns completed deferred frees. Lock held.
  // Removes fully free segments from the pools, and adds the streams they were used on to |out_streams|.
  // Lock held. A segment whose stream is being destroyed stays (it is released once that has finished).
  std::vector<Block*> take_free_segments(std::vector<Stream>* out_streams);
  // Lock NOT held; synchronizes |streams| first.
  void release_segments(std::vector<Block*> segments, const std::vector<Stream>& streams);
  hal_event_t get_event();                     // From the free list or new. Lock held.
  void* plugin_allocate(size_t nbytes, hal_status_t* out_status);
  [[noreturn]] void throw_oom(size_t nbytes, hal_status_t status, const std::string& plugin_message);

  Device& device_;
  mutable std::mutex mutex_;
  Pool small_pool_;
  Pool large_pool_;
  std::unordered_map<void*, Block*> allocated_;  // Live blocks by pointer.
  std::deque<PendingFree> pending_;              // Frees waiting on other streams' events.
  std::vector<hal_event_t> free_events_;
  AllocatorStats stats_;
  std::vector<Block*> segments_;  // Head block of every segment (for release_all).
};

// Owns one allocation from a device's Allocator; frees it on destruction (unless released). Move-only.
class Allocation {
 public:
  Allocation() = default;
  Allocation(Device& device, size_t nbytes, const Stream& stream);  // Allocates.
  ~Allocation() { free(); }
  Allocation(Allocation&& other) noexcept;
  Allocation& operator=(Allocation&& other) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  // The memory. Throws HAL_STATUS_INVALID_ARGUMENT once freed (a use after free), naming the device.
  void* ptr() const;
  size_t nbytes() const { return nbytes_; }
  Device* device() const { return device_; }
  // The stream it was allocated on (held: it lives at least as long as the allocation).
  const std::optional<Stream>& stream() const { return stream_; }
  bool freed() const { return !owned_; }
  // Allocator::record_stream; throws HAL_STATUS_INVALID_ARGUMENT once freed.
  void record_stream(const Stream& stream);
  // Returns the memory to the allocator. Idempotent; never throws (errors are dropped, as in destructors).
  void free() noexcept;

 private:
  Device* device_ = nullptr;
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  std::optional<Stream> stream_;
  bool owned_ = false;
};

// Benchmark hook: seconds for |iters| allocate+free pairs of |nbytes| on the default stream, through the
// cache (raw = false) or straight to the plugin (raw = true).
double bench_alloc_pairs(Device& device, size_t nbytes, int64_t iters, bool raw);

}  // namespace hal

#endif  // HAL_RUNTIME_ALLOCATOR_H_
