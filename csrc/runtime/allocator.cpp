#include "runtime/allocator.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "runtime/device.h"

namespace hal {
namespace {

// |n| <= kMaxRequest, so this cannot wrap.
size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

std::string pointer_text(const void* ptr) {
  char text[32];
  std::snprintf(text, sizeof(text), "%p", ptr);
  return text;
}

void update_peak(int64_t current, int64_t* peak) { *peak = std::max(*peak, current); }

}  // namespace

// A contiguous range of one segment. Blocks of a segment are linked in address order; all share the
// segment's stream (nullptr once that stream is destroyed: no queued work uses the segment) and pool.
struct Allocator::Block {
  enum class State { kFree, kAllocated, kPending };
  Block(char* ptr_, size_t size_, StreamState* stream_, bool small_)
      : ptr(ptr_), size(size_), stream(stream_), small(small_) {}
  char* ptr;
  size_t size;
  StreamState* stream;
  bool small;
  State state = State::kFree;
  Block* prev = nullptr;
  Block* next = nullptr;
  std::vector<StreamState*> stream_uses;  // Other streams that used it (record_stream).
  std::vector<hal_event_t> use_events;    // Such uses of streams destroyed since: their last work.
};

bool Allocator::BlockLess::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return std::less<StreamState*>()(a->stream, b->stream);
  if (a->size != b->size) return a->size < b->size;
  return std::less<char*>()(a->ptr, b->ptr);
}

std::vector<std::pair<const char*, int64_t>> AllocatorStats::items() const {
  return {{"allocated_bytes", allocated_bytes}, {"allocated_bytes_peak", allocated_bytes_peak},
          {"reserved_bytes", reserved_bytes},   {"reserved_bytes_peak", reserved_bytes_peak},
          {"active_blocks", active_blocks},     {"allocated_blocks", allocated_blocks},
          {"segments", segments},               {"num_allocs", num_allocs},
          {"num_frees", num_frees},             {"num_raw_allocs", num_raw_allocs},
          {"num_raw_frees", num_raw_frees},     {"num_ooms", num_ooms},
          {"num_cache_hits", num_cache_hits},   {"num_alloc_retries", num_alloc_retries}};
}

Allocator::Allocator(Device& device) : device_(device) {}

Allocator::~Allocator() = default;  // Never runs: devices live as long as the process (registry.h).

Allocator::Block* Allocator::find_free_block(Pool& pool, StreamState* stream, size_t size) {
  // A block of this stream, else one that belongs to no stream any more (its stream was destroyed).
  for (StreamState* owner : {stream, static_cast<StreamState*>(nullptr)}) {
    Block key(nullptr, size, owner, false);
    auto it = pool.lower_bound(&key);
    if (it == pool.end() || (*it)->stream != owner) continue;
    Block* block = *it;
    pool.erase(it);
    if (owner != stream) adopt_segment(pool, block, stream);
    return block;
  }
  return nullptr;
}

void Allocator::adopt_segment(Pool& pool, Block* taken, StreamState* stream) {
  Block* head = taken;
  while (head->prev != nullptr) head = head->prev;
  for (Block* b = head; b != nullptr; b = b->next) {
    const bool pooled = b != taken && b->state == Block::State::kFree;
    if (pooled) pool.erase(b);  // The pool is ordered by stream first: re-insert under the new one.
    b->stream = stream;
    if (pooled) pool.insert(b);
  }
}

Allocator::Block* Allocator::split(Pool& pool, Block* block, size_t size) {
  const size_t remaining = block->size - size;
  const bool worth_it = block->small ? remaining >= kRoundBytes : remaining > kSmallRequest;
  if (!worth_it) return block;
  Block* rest = new Block(block->ptr + size, remaining, block->stream, block->small);
  rest->prev = block;
  rest->next = block->next;
  if (rest->next) rest->next->prev = rest;
  block->next = rest;
  block->size = size;
  pool.insert(rest);
  return block;
}

void Allocator::return_block(Block* block) {
  Pool& pool = block->small ? small_pool_ : large_pool_;
  block->state = Block::State::kFree;
  block->stream_uses.clear();
  if (Block* prev = block->prev; prev && prev->state == Block::State::kFree) {
    pool.erase(prev);
    prev->size += block->size;
    prev->next = block->next;
    if (prev->next) prev->next->prev = prev;
    delete block;
    block = prev;
  }
  if (Block* next = block->next; next && next->state == Block::State::kFree) {
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (block->next) block->next->prev = block;
    delete next;
  }
  pool.insert(block);
}

void Allocator::process_pending() {
  const Plugin& plugin = device_.plugin();
  for (auto it = pending_.begin(); it != pending_.end();) {
    bool done = true;
    for (hal_event_t event : it->events) {
      // Anything but NOT_READY means the stream passed the free (an error is sticky: the work is over).
      if (plugin.api().event_query(event) == HAL_STATUS_NOT_READY) {
        done = false;
        break;
      }
    }
    if (!done) {
      ++it;
      continue;
    }
    free_events_.insert(free_events_.end(), it->events.begin(), it->events.end());
    return_block(it->block);
    --stats_.active_blocks;
    it = pending_.erase(it);
  }
}

hal_event_t Allocator::get_event() {
  if (!free_events_.empty()) {
    hal_event_t event = free_events_.back();
    free_events_.pop_back();
    return event;
  }
  const Plugin& plugin = device_.plugin();
  hal_event_t event = nullptr;
  plugin.check(plugin.api().event_create(device_.local_index(), 0, &event), "event_create", device_.name());
  return event;
}

void* Allocator::plugin_allocate(size_t nbytes, hal_status_t* out_status) {
  const Plugin& plugin = device_.plugin();
  void* ptr = nullptr;
  *out_status = plugin.api().memory_allocate(device_.local_index(), nbytes, &ptr);
  if (*out_status == HAL_STATUS_OUT_OF_MEMORY) return nullptr;  // The caller reads the message.
  plugin.check(*out_status, "memory_allocate", device_.name());
  return ptr;
}

void Allocator::throw_oom(size_t nbytes, hal_status_t status, const std::string& plugin_message) {
  const AllocatorStats s = stats_;
  uint64_t capacity = device_.properties().total_memory;
  const std::string text = device_.name() + ": out of memory: tried to allocate " + format_bytes(nbytes) + " (" +
                           std::to_string(nbytes) + " bytes); " + format_bytes(s.allocated_bytes) + " in use, " +
                           format_bytes(s.reserved_bytes - s.allocated_bytes) + " cached, " +
                           format_bytes(capacity) + " capacity" +
                           (plugin_message.empty() ? "" : " (" + device_.plugin().describe() +
                                                              ": memory_allocate: " + plugin_message + ")");
  throw Error(status, text, device_.plugin().name(), device_.name());
}

void* Allocator::allocate(size_t nbytes, const Stream& stream) {
  if (nbytes == 0) return nullptr;
  device_.plugin().api();  // A closed runtime or a forked child says so, even for a cached block.
  if (nbytes > kMaxRequest) {  // More than any device holds, and more than the arithmetic below could.
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.num_ooms;
    throw_oom(nbytes, HAL_STATUS_OUT_OF_MEMORY, "");
  }
  const size_t size = round_up(nbytes, kRoundBytes);
  const bool small = size <= kSmallRequest;
  const size_t segment_size = small ? kSmallSegment : round_up(size, kLargeSegmentRound);

  std::unique_lock<std::mutex> lock(mutex_);
  process_pending();
  Pool& pool = small ? small_pool_ : large_pool_;
  Block* block = find_free_block(pool, stream.state(), size);
  if (block != nullptr) {
    ++stats_.num_cache_hits;
  } else {
    hal_status_t status = HAL_STATUS_OK;
    void* ptr = plugin_allocate(segment_size, &status);
    if (ptr == nullptr) {
      // Out of memory: give the cache back (waiting for every stream) and try once more.
      ++stats_.num_alloc_retries;
      lock.unlock();
      device_.synchronize();
      empty_cache();
      lock.lock();
      process_pending();
      block = find_free_block(pool, stream.state(), size);
      if (block == nullptr) ptr = plugin_allocate(segment_size, &status);
      if (block == nullptr && ptr == nullptr) {
        ++stats_.num_ooms;
        throw_oom(nbytes, status, device_.plugin().last_error());
      }
    }
    if (block == nullptr) {
      block = new Block(static_cast<char*>(ptr), segment_size, stream.state(), small);
      segments_.push_back(block);
      ++stats_.num_raw_allocs;
      stats_.reserved_bytes += segment_size;
      update_peak(stats_.reserved_bytes, &stats_.reserved_bytes_peak);
    }
  }
  block = split(pool, block, size);
  block->state = Block::State::kAllocated;
  allocated_.emplace(block->ptr, block);
  ++stats_.num_allocs;
  ++stats_.active_blocks;
  stats_.allocated_bytes += block->size;
  update_peak(stats_.allocated_bytes, &stats_.allocated_bytes_peak);
  return block->ptr;
}

void Allocator::free(void* ptr) {
  if (ptr == nullptr || !device_.plugin().alive()) return;  // Closed: the memory is left to the OS.
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = allocated_.find(ptr);
  if (it == allocated_.end()) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT,
                device_.name() + ": free of " + pointer_text(ptr) + ", which the allocator does not own "
                                 "(double free, or not from allocate)");
  }
  Block* block = it->second;
  allocated_.erase(it);
  ++stats_.num_frees;
  stats_.allocated_bytes -= block->size;
  if (block->stream_uses.empty() && block->use_events.empty()) {
    return_block(block);
    --stats_.active_blocks;
    return;
  }
  // Other streams used the block: it goes back to the pool once each has passed this point.
  PendingFree pending{block, std::move(block->use_events)};
  block->use_events.clear();
  const Plugin& plugin = device_.plugin();
  for (StreamState* used : block->stream_uses) {
    hal_event_t event = get_event();
    hal_status_t status = plugin.api().event_record(event, used->handle);
    if (status == HAL_STATUS_OK) {
      pending.events.push_back(event);
    } else {
      free_events_.push_back(event);  // Cannot order it: wait for the stream instead.
      plugin.api().stream_synchronize(used->handle);
    }
  }
  block->state = Block::State::kPending;
  pending_.push_back(std::move(pending));
}

void Allocator::record_stream(void* ptr, const Stream& stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = allocated_.find(ptr);
  if (it == allocated_.end()) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT,
                device_.name() + ": record_stream of " + pointer_text(ptr) + ", which is not allocated");
  }
  if (&stream.device() != &device_) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, device_.name() + ": record_stream with a stream of " +
                                                 stream.device().name());
  }
  Block* block = it->second;
  if (stream.state() == block->stream) return;
  auto& uses = block->stream_uses;
  if (std::find(uses.begin(), uses.end(), stream.state()) == uses.end()) uses.push_back(stream.state());
}

size_t Allocator::allocation_size(void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = allocated_.find(ptr);
  return it == allocated_.end() ? 0 : it->second->size;
}

std::pair<void*, size_t> Allocator::find_allocation(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = allocated_.find(const_cast<void*>(ptr)); it != allocated_.end()) return {it->first, it->second->size};
  const char* p = static_cast<const char*>(ptr);
  for (const Block* head : segments_) {
    for (const Block* b = head; b != nullptr; b = b->next) {
      if (p >= b->ptr && p < b->ptr + b->size) {
        if (b->state != Block::State::kAllocated) return {nullptr, 0};
        return {b->ptr, b->size};
      }
    }
  }
  return {nullptr, 0};
}

std::vector<Allocator::Block*> Allocator::take_free_segments(std::vector<Stream>* out_streams) {
  std::vector<Block*> taken;
  for (auto it = segments_.begin(); it != segments_.end();) {
    Block* head = *it;
    bool take = head->state == Block::State::kFree && head->next == nullptr;
    if (take && head->stream != nullptr) {
      // A stream being destroyed is no longer found; its segments go once it has been (stream_destroyed).
      try {
        Stream stream = device_.stream(head->stream->id);
        if (std::find(out_streams->begin(), out_streams->end(), stream) == out_streams->end()) {
          out_streams->push_back(std::move(stream));
        }
      } catch (const Error&) {
        take = false;
      }
    }
    if (take) {
      (head->small ? small_pool_ : large_pool_).erase(head);
      stats_.reserved_bytes -= head->size;
      taken.push_back(head);
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

void Allocator::release_segments(std::vector<Block*> segments, const std::vector<Stream>& streams) {
  if (segments.empty()) return;
  const Plugin& plugin = device_.plugin();
  // memory_free needs the memory idle: wait for the streams the segments were used on.
  std::exception_ptr error;
  for (const Stream& s : streams) {
    try {
      s.synchronize();
    } catch (...) {
      if (!error) error = std::current_exception();  // The work is over either way; free, then report.
    }
  }
  int64_t freed = 0;
  for (Block* s : segments) {
    hal_status_t status = plugin.api().memory_free(device_.local_index(), s->ptr);
    delete s;
    if (status == HAL_STATUS_OK) {
      ++freed;
    } else if (!error) {
      try {
        plugin.check(status, "memory_free", device_.name());
      } catch (...) {
        error = std::current_exception();
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.num_raw_frees += freed;
  }
  if (error) std::rethrow_exception(error);
}

void Allocator::empty_cache() {
  std::vector<Block*> segments;
  std::vector<Stream> streams;  // Dropped after the lock: the last handle of a stream takes it (stream.cpp).
  {
    std::lock_guard<std::mutex> lock(mutex_);
    process_pending();
    segments = take_free_segments(&streams);
  }
  release_segments(std::move(segments), streams);
}

bool Allocator::segment_bases(std::vector<const void*>* out, bool wait) const {
  std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
  if (wait) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return false;
  }
  for (const Block* head : segments_) out->push_back(head->ptr);
  return true;
}

AllocatorStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  AllocatorStats s = stats_;
  s.allocated_blocks = static_cast<int64_t>(allocated_.size());
  s.segments = static_cast<int64_t>(segments_.size());
  return s;
}

void Allocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.allocated_bytes_peak = stats_.allocated_bytes;
  stats_.reserved_bytes_peak = stats_.reserved_bytes;
}

void Allocator::reset_accumulated_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.num_allocs = stats_.num_frees = 0;
  stats_.num_raw_allocs = stats_.num_raw_frees = 0;
  stats_.num_ooms = stats_.num_cache_hits = stats_.num_alloc_retries = 0;
}

void* Allocator::raw_allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const Plugin& plugin = device_.plugin();
  void* ptr = nullptr;
  plugin.check(plugin.api().memory_allocate(device_.local_index(), nbytes, &ptr), "memory_allocate",
               device_.name());
  return ptr;
}

void Allocator::raw_free(void* ptr) {
  if (ptr == nullptr) return;
  const Plugin& plugin = device_.plugin();
  plugin.check(plugin.api().memory_free(device_.local_index(), ptr), "memory_free", device_.name());
}

void Allocator::stream_destroying(StreamState* stream) noexcept {
  const hal_plugin_api_t* api = device_.plugin().api_if_alive();
  if (api == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [ptr, block] : allocated_) {
    auto& uses = block->stream_uses;
    auto it = std::find(uses.begin(), uses.end(), stream);
    if (it == uses.end()) continue;
    uses.erase(it);
    try {
      hal_event_t event = get_event();
      if (api->event_record(event, stream->handle) == HAL_STATUS_OK) {
        block->use_events.push_back(event);
        continue;
      }
      free_events_.push_back(event);
    } catch (const Error&) {
    }
    api->stream_synchronize(stream->handle);  // Cannot order the free after it: wait for its work now.
  }
}

void Allocator::stream_destroyed(StreamState* stream) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Block* head : segments_) {
    if (head->stream != stream) continue;
    Pool& pool = head->small ? small_pool_ : large_pool_;
    for (Block* b = head; b != nullptr; b = b->next) {
      const bool pooled = b->state == Block::State::kFree;
      if (pooled) pool.erase(b);
      b->stream = nullptr;
      if (pooled) pool.insert(b);
    }
  }
}

Allocation::Allocation(Device& device, size_t nbytes, const Stream& stream)
    : device_(&device),
      ptr_(device.allocator().allocate(nbytes, stream)),
      nbytes_(nbytes),
      stream_(stream),
      owned_(true) {}

Allocation::Allocation(Allocation&& other) noexcept { *this = std::move(other); }

Allocation& Allocation::operator=(Allocation&& other) noexcept {
  if (this != &other) {
    free();
    device_ = other.device_;
    ptr_ = other.ptr_;
    nbytes_ = other.nbytes_;
    stream_ = other.stream_;
    owned_ = other.owned_;
    other.owned_ = false;
  }
  return *this;
}

void* Allocation::ptr() const {
  if (!owned_) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT,
                (device_ ? device_->name() + ": " : std::string()) + "use of freed memory: this buffer of " +
                    std::to_string(nbytes_) + " bytes (and every view of it) was freed");
  }
  return ptr_;
}

void Allocation::record_stream(const Stream& stream) {
  if (ptr() != nullptr) device_->allocator().record_stream(ptr_, stream);
}

void Allocation::free() noexcept {
  if (!owned_) return;
  owned_ = false;
  try {
    device_->allocator().free(ptr_);
  } catch (...) {
  }
}

double bench_alloc_pairs(Device& device, size_t nbytes, int64_t iters, bool raw) {
  Allocator& allocator = device.allocator();
  Stream stream = device.default_stream();
  auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    if (raw) {
      allocator.raw_free(allocator.raw_allocate(nbytes));
    } else {
      allocator.free(allocator.allocate(nbytes, stream));
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace hal
