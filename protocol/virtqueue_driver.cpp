#include "vhu/virtqueue_driver.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

namespace vhu {
namespace {

static_assert(std::endian::native == std::endian::little, "split ring access assumes a little-endian host");

// Layout of the area, in order:
//   descriptor table   16 * size            at 0 (16-aligned: the area's own alignment)
//   avail ring         6 + 2 * size         right after, which is 2-aligned
//   used ring          6 + 8 * size         rounded up to 4 only
//   indirect pool      size * kMaxIndirect descriptors, 16-aligned
// The rings sit at the spec's minimum alignment rather than a page, so a
// back-end that assumes the legacy 4096-byte layout reads the wrong place.
// The pool gives every descriptor index its own indirect table, so an
// indirect chain's table is found from its head and needs no allocator; at
// the maximum queue size that is 8 MiB, a price only paid by queues that big.
constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
constexpr uint64_t avail_off(uint32_t size) { return vring::desc_table_bytes(size); }
constexpr uint64_t used_off(uint32_t size) {
  return align_up(avail_off(size) + vring::avail_ring_bytes(size), vring::kUsedAlign);
}
constexpr uint64_t indirect_off(uint32_t size) {
  return align_up(used_off(size) + vring::used_ring_bytes(size), vring::kDescAlign);
}
constexpr uint64_t kTableBytes = DriverQueue::kMaxIndirect * sizeof(vring::Desc);

using vring::kRingEntries;
using vring::kRingFlags;
using vring::kRingIdx;

uint16_t load16(const uint8_t* p, int order) { return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), order); }
void store16(uint8_t* p, uint16_t v, int order) { __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, order); }
uint32_t load32(const uint8_t* p) { return __atomic_load_n(reinterpret_cast<const uint32_t*>(p), __ATOMIC_RELAXED); }

void write_desc(uint8_t* at, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
  const vring::Desc d{addr, len, flags, next};
  std::memcpy(at, &d, sizeof d);
}

}  // namespace

uint64_t DriverQueue::area_bytes(uint32_t size) { return indirect_off(size) + size * kTableBytes; }

Result<void> DriverQueue::init(uint8_t* host, uint64_t gpa, uint32_t size, bool event_idx) {
  if (!vring::valid_queue_size(size))
    return Err(fmt::format("queue size {} is not a power of two in [1, {}]", size, vring::kMaxQueueSize));
  if (host == nullptr) return Err("no host mapping for the queue area");
  if (gpa % vring::kDescAlign != 0)
    return Err(fmt::format("queue area gpa {:#x} is not {}-byte aligned", gpa, vring::kDescAlign));
  if (reinterpret_cast<uintptr_t>(host) % vring::kDescAlign != 0)
    return Err(fmt::format("queue area host mapping is not {}-byte aligned", vring::kDescAlign));
  if (gpa > UINT64_MAX - area_bytes(size))
    return Err(fmt::format("queue area gpa {:#x} + {:#x} bytes wraps around 2^64", gpa, area_bytes(size)));

  host_ = host;
  gpa_ = gpa;
  size_ = size;
  event_idx_ = event_idx;
  avail_off_ = avail_off(size);
  used_off_ = used_off(size);
  indirect_off_ = indirect_off(size);
  // Zeroed flags and event indices are what the spec asks of a fresh ring
  // (the driver MUST initialise used flags to 0).
  std::memset(host_, 0, area_bytes(size));
  free_.clear();
  free_.reserve(size);
  // Pushed in reverse so that chains take descriptors 0, 1, 2... in order,
  // which keeps tests readable.
  for (uint32_t i = size; i-- > 0;) free_.push_back(static_cast<uint16_t>(i));
  chain_len_.assign(size, 0);
  chain_indirect_.assign(size, false);
  num_free_ = static_cast<uint16_t>(size);
  avail_idx_ = 0;
  last_used_ = 0;
  return Ok();
}

uint64_t DriverQueue::avail_gpa() const { return gpa_ + avail_off_; }
uint64_t DriverQueue::used_gpa() const { return gpa_ + used_off_; }

Result<uint16_t> DriverQueue::add(std::span<const DriverBuffer> bufs, bool indirect) {
  if (host_ == nullptr) return Err("driver queue is not initialised");
  if (bufs.empty()) return Err("add: a chain needs at least one buffer");
  // An indirect table may hold more buffers than the queue size: the device
  // must reject that chain, and negative tests need to build it.
  if (indirect && bufs.size() > kMaxIndirect)
    return Err(fmt::format("add: {} buffers exceed the {} of an indirect table", bufs.size(), kMaxIndirect));
  const size_t needed = indirect ? 1 : bufs.size();
  if (needed > num_free_) return Err(fmt::format("add: {} descriptors needed, {} free", needed, num_free_));

  const uint16_t head = free_.back();
  if (indirect) {
    free_.pop_back();
    const uint64_t table_off = indirect_off_ + head * kTableBytes;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const bool more = i + 1 < bufs.size();
      const uint16_t flags =
          static_cast<uint16_t>((bufs[i].writable ? vring::kDescFWrite : 0) | (more ? vring::kDescFNext : 0));
      write_desc(host_ + table_off + i * sizeof(vring::Desc), bufs[i].gpa, bufs[i].len, flags,
                 more ? static_cast<uint16_t>(i + 1) : 0);
    }
    write_desc(host_ + 16ull * head, gpa_ + table_off, static_cast<uint32_t>(bufs.size() * sizeof(vring::Desc)),
               vring::kDescFIndirect, 0);
  } else {
    uint16_t cur = free_.back();
    free_.pop_back();
    for (size_t i = 0; i < bufs.size(); ++i) {
      const bool more = i + 1 < bufs.size();
      uint16_t next = 0;
      if (more) {
        next = free_.back();
        free_.pop_back();
      }
      const uint16_t flags =
          static_cast<uint16_t>((bufs[i].writable ? vring::kDescFWrite : 0) | (more ? vring::kDescFNext : 0));
      write_desc(host_ + 16ull * cur, bufs[i].gpa, bufs[i].len, flags, next);
      cur = next;
    }
  }
  num_free_ = static_cast<uint16_t>(num_free_ - needed);
  chain_len_[head] = static_cast<uint16_t>(needed);
  chain_indirect_[head] = indirect;
  // The entry is written now but stays invisible until publish() moves idx.
  store16(host_ + avail_off_ + kRingEntries + 2ull * (avail_idx_ % size_), head, __ATOMIC_RELAXED);
  ++avail_idx_;
  return head;
}

void DriverQueue::publish() {
  if (host_ == nullptr) return;
  // Release: descriptors and ring entries before the index ("Updating idx").
  store16(host_ + avail_off_ + kRingIdx, avail_idx_, __ATOMIC_RELEASE);
}

uint16_t DriverQueue::device_used_idx() const {
  if (host_ == nullptr) return 0;
  return load16(host_ + used_off_ + kRingIdx, __ATOMIC_ACQUIRE);
}

// A used element whose id is out of range or not an outstanding head is a
// device bug the runner has to report, so it is returned as read and frees
// nothing. Descriptor links are followed through the shared table, which the
// device MUST NOT write; bounds keep a device that does so from
// doing more than confuse this queue's free list.
std::optional<vring::UsedElem> DriverQueue::pop_used() {
  if (host_ == nullptr) return std::nullopt;
  const uint16_t idx = device_used_idx();
  if (idx == last_used_) return std::nullopt;
  const uint8_t* at = host_ + used_off_ + kRingEntries + 8ull * (last_used_ % size_);
  const vring::UsedElem e{load32(at), load32(at + 4)};
  ++last_used_;
  if (e.id >= size_ || chain_len_[e.id] == 0) return e;

  uint16_t cur = static_cast<uint16_t>(e.id);
  const uint16_t n = chain_len_[e.id];
  chain_len_[e.id] = 0;
  chain_indirect_[e.id] = false;
  for (uint16_t k = 0; k < n && free_.size() < size_; ++k) {
    free_.push_back(cur);
    vring::Desc d;
    std::memcpy(&d, host_ + 16ull * cur, sizeof d);
    if (d.next >= size_) break;
    cur = d.next;
  }
  num_free_ = static_cast<uint16_t>(free_.size());
  return e;
}

bool DriverQueue::needs_kick(uint16_t old_avail_idx) const {
  if (host_ == nullptr) return false;
  // The idx store of publish() must be visible before flags/avail_event are
  // read ("Notifying The Device"), or a device going to sleep in between is never woken.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (event_idx_) {
    const uint16_t event = load16(host_ + used_off_ + kRingEntries + 8ull * size_, __ATOMIC_RELAXED);
    return vring::need_event(event, avail_idx_, old_avail_idx);
  }
  return (load16(host_ + used_off_ + kRingFlags, __ATOMIC_RELAXED) & vring::kUsedFNoNotify) == 0;
}

void DriverQueue::set_used_event(uint16_t idx) {
  if (host_ == nullptr) return;
  store16(host_ + avail_off_ + kRingEntries + 2ull * size_, idx, __ATOMIC_RELAXED);
  // Callers re-check the used idx after moving the event; that read must
  // come after this store is visible.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void DriverQueue::set_no_interrupt(bool on) {
  if (host_ == nullptr) return;
  store16(host_ + avail_off_ + kRingFlags, on ? vring::kAvailFNoInterrupt : 0, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

vring::Desc* DriverQueue::desc_table() const { return reinterpret_cast<vring::Desc*>(host_); }

uint16_t* DriverQueue::avail_ring() const {
  return host_ ? reinterpret_cast<uint16_t*>(host_ + avail_off_ + kRingEntries) : nullptr;
}

// Moves the shadow index too, so a later publish() does not undo it.
void DriverQueue::set_avail_idx_raw(uint16_t idx) {
  avail_idx_ = idx;
  if (host_ != nullptr) store16(host_ + avail_off_ + kRingIdx, idx, __ATOMIC_RELEASE);
}

}  // namespace vhu
