// Copies of the `hal` backend (copies.h).
//
// Math bits. A tensor's values are its memory with the conjugate and negative bits applied. torch's copy_
// passes both bits to _copy_from, which (unlike copy_ on CPU) has no Conjugate / Negative kernel of its own:
// the math-bits fallback would resolve the source by cloning it, and the clone copies through _copy_from
// again, forever. So _copy_from falls through those keys (registered below) and every path here honours the
// bits: raw memory copies only between tensors with the same bits; other paths go through CPU tensors that
// carry them, where torch's CPU copy applies them.
#include "copies.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/ops/empty.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <chrono>
#include <utility>

#include "host_access.h"
#include "factories.h"
#include "operators.h"
#include "runtime_access.h"
#include "streams.h"

namespace hal::bridge {
namespace {

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.is_conj() == b.is_conj() && a.is_neg() == b.is_neg();
}

// Whether a byte copy of one tensor's memory gives the other the same values.
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() && a.is_contiguous() && b.is_contiguous() &&
         same_bits(a, b);
}

void* storage_ptr(const at::Tensor& t) { return t.storage().unsafeGetStorageImpl()->mutable_data(); }

// Elements [first, last) of the storage that |t| touches.
std::pair<int64_t, int64_t> storage_span(const at::Tensor& t) {
  int64_t last = t.storage_offset();
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {t.storage_offset(), last + 1};
}

void synchronize(const Stream& stream) {
  translate("synchronizing", [&] { stream.synchronize(); });
}

// Keeps |keep| (host memory a queued copy reads or writes) alive until the work queued on |stream| so far ran.
void keep_until_done(const Stream& stream, at::Tensor keep) {
  if (!stream.device().supports("launch_host_func")) return synchronize(stream);
  translate("queueing a host function", [&] {
    stream.launch_host_func([keep = std::move(keep)]() mutable { keep.reset(); });
  });
}

// |t| with the math bits of |like|.
at::Tensor with_bits_of(at::Tensor t, const at::Tensor& like) {
  t._set_conj(like.is_conj());
  t._set_neg(like.is_neg());
  return t;
}

// A contiguous CPU tensor holding the memory hal tensor |dst| needs to hold |host|'s values: |host| itself when
// its layout matches, else a converted copy (dtype, broadcast, math bits).
at::Tensor staged_for(const at::Tensor& dst, const at::Tensor& host) {
  if (same_layout(host, dst)) return host;
  at::Tensor staged = with_bits_of(at::empty(dst.sizes(), dst.options().device(c10::kCPU)), dst);
  staged.copy_(host);
  return staged;
}

// A copy between two tensors of one device by the plugin's aten::copy_ kernel when it declares one for them
// (strides, broadcast, a dtype change), queued on the current stream: true when queued.
bool copy_natively(const at::Tensor& src, const at::Tensor& dst) {
  if (src.is_conj() || src.is_neg() || dst.is_conj() || dst.is_neg()) return false;
  static const c10::OperatorHandle copy_op = c10::Dispatcher::singleton().findSchemaOrThrow("aten::copy_", "");
  const auto start = std::chrono::steady_clock::now();
  torch::jit::Stack stack{dst, src, false};
  if (run_native(copy_op, &stack, dst.device().index()) != Native::kRan) return false;
  record_op("aten::copy_", OpPath::kNative,
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  return true;
}

void copy_device_to_host(const at::Tensor& src, const at::Tensor& dst, bool non_blocking) {
  Stream stream = current_stream(src.device().index());
  if (!non_blocking && host_reachable(stream.device())) {
    // Read in place once the stream is done with it: torch's CPU copy (threads, strides, dtype), as clone().
    synchronize(stream);
    HostAliases aliases;
    dst.copy_(aliases.alias(src));
  } else if (same_layout(src, dst)) {
    translate("copying device to host", [&] { stream.copy_d2h(dst.data_ptr(), src.const_data_ptr(), dst.nbytes()); });
    if (non_blocking) {
      keep_until_done(stream, dst);
    } else {
      synchronize(stream);
    }
  } else {
    dst.copy_(read_to_host(src));
  }
}

void copy_device_to_device(const at::Tensor& src, const at::Tensor& dst, bool non_blocking) {
  // As on the CPU: a destination that shares memory with its source (x[1:].copy_(x[:-1])) is refused.
  if (dst.device() == src.device()) at::assert_no_overlap(dst, src);
  Stream dst_stream = current_stream(dst.device().index());
  Stream src_stream = current_stream(src.device().index());
  Device& src_dev = src_stream.device();
  Device& dst_dev = dst_stream.device();
  if (same_layout(src, dst)) {  // One block: a device copy, or a peer copy between devices.
    translate("copying device to device", [&] {
      if (&src_dev == &dst_dev) {
        dst_stream.copy_d2d(dst.data_ptr(), src.const_data_ptr(), dst.nbytes());
        return;
      }
      copy_peer(dst_stream, dst.data_ptr(), src_stream, src.const_data_ptr(), dst.nbytes());
      if (!non_blocking) {
        dst_stream.synchronize();
      } else if (&src_dev.plugin() == &dst_dev.plugin()) {
        // The source may be freed and reused on its own stream next: that stream waits for the copy. (Across
        // plugins copy_peer stages through the host and has completed already.)
        Event copied(dst_dev, false);
        copied.record(dst_stream);
        src_stream.wait_event(copied);
      }
    });
    return;
  }
  if (&src_dev == &dst_dev && copy_natively(src, dst)) return;  // The plugin's own aten::copy_ kernel.
  if (&src_dev == &dst_dev && host_reachable(dst_dev)) {  // Strides, dtype or bits change on one device: on the host.
    synchronize(dst_stream);
    HostAliases aliases;
    aliases.alias(dst).copy_(aliases.alias(src));
    return;
  }
  write_from_host(dst, read_to_host(src), false);
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  TORCH_CHECK(self.defined() && dst.defined(), "hal: copy of an undefined tensor");
  if (dst.numel() == 0) return dst;
  check_not_forked();
  const bool from_hal = self.is_privateuseone();
  const bool to_hal = dst.is_privateuseone();
  TORCH_CHECK((from_hal || self.is_cpu()) && (to_hal || dst.is_cpu()), "hal: cannot copy from ", self.device(),
              " to ", dst.device());
  if (!from_hal) {
    write_from_host(dst, self, non_blocking);
  } else if (!to_hal) {
    copy_device_to_host(self, dst, non_blocking);
  } else {
    copy_device_to_device(self, dst, non_blocking);
  }
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  restride(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) { return read_to_host(self).item(); }

}  // namespace

at::Tensor read_to_host(const at::Tensor& src) {
  Stream stream = current_stream(src.device().index());
  if (host_reachable(stream.device())) {  // Read in place once the stream is done with it: one CPU copy.
    synchronize(stream);
    HostAliases aliases;
    return aliases.alias(src).clone(at::MemoryFormat::Contiguous);
  }
  if (src.is_contiguous()) {
    at::Tensor host = at::empty(src.sizes(), src.options().device(c10::kCPU));
    translate("copying device to host", [&] {
      stream.copy_d2h(host.data_ptr(), src.const_data_ptr(), src.nbytes());
      stream.synchronize();
    });
    return with_bits_of(host, src).resolve_conj().resolve_neg();
  }
  auto [first, last] = storage_span(src);
  const int64_t item = src.dtype().itemsize();
  at::Tensor span = at::empty({last - first}, src.options().device(c10::kCPU));
  translate("copying device to host", [&] {
    stream.copy_d2h(span.data_ptr(), static_cast<char*>(storage_ptr(src)) + first * item, (last - first) * item);
    stream.synchronize();
  });
  return with_bits_of(span.as_strided(src.sizes(), src.strides(), 0), src).clone(at::MemoryFormat::Contiguous);
}

void write_from_host(const at::Tensor& dst, const at::Tensor& host, bool non_blocking) {
  Stream stream = current_stream(dst.device().index());
  Device& dev = stream.device();
  const bool queue_wanted = non_blocking && dst.is_contiguous() && dev.supports("launch_host_func");
  if (host_reachable(dev) && !queue_wanted) {  // In place once the stream is done with dst.
    synchronize(stream);
    HostAliases aliases;
    aliases.alias(dst).copy_(host);
    return;
  }
  if (dst.is_contiguous()) {
    at::Tensor staged = staged_for(dst, host);
    translate("copying host to device", [&] { stream.copy_h2d(dst.data_ptr(), staged.const_data_ptr(), dst.nbytes()); });
    if (queue_wanted) {
      keep_until_done(stream, std::move(staged));
    } else {
      synchronize(stream);
    }
    return;
  }
  // Read-modify-write of the span dst covers.
  synchronize(stream);
  auto [first, last] = storage_span(dst);
  const int64_t item = dst.dtype().itemsize();
  char* base = static_cast<char*>(storage_ptr(dst)) + first * item;
  at::Tensor span = at::empty({last - first}, dst.options().device(c10::kCPU));
  translate("copying device to host", [&] {
    stream.copy_d2h(span.data_ptr(), base, (last - first) * item);
    stream.synchronize();
  });
  with_bits_of(span.as_strided(dst.sizes(), dst.strides(), 0), dst).copy_(host);
  translate("copying host to device", [&] {
    stream.copy_h2d(base, span.const_data_ptr(), (last - first) * item);
    stream.synchronize();
  });
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("_copy_from", TORCH_FN(copy_from));
  m.impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  m.impl("_local_scalar_dense", TORCH_FN(local_scalar_dense));
}

// See "Math bits" above.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

}  // namespace hal::bridge
