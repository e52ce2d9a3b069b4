#include "vhu/virtqueue.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string>

namespace vhu {
namespace {

// The ring is little-endian (virtio 1.x); every access below is native.
static_assert(std::endian::native == std::endian::little, "split ring access assumes a little-endian host");

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

// Ring fields are shared with a guest that may write them at any moment;
// atomics keep each 16/32-bit field from tearing and give the ordering the
// spec asks for: read idx, then the entries it covers.
uint16_t load16(const uint8_t* p, int order) { return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), order); }
void store16(uint8_t* p, uint16_t v, int order) { __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, order); }
void store32(uint8_t* p, uint32_t v) { __atomic_store_n(reinterpret_cast<uint32_t*>(p), v, __ATOMIC_RELAXED); }

using vring::kRingEntries;
using vring::kRingFlags;
using vring::kRingIdx;
uint64_t used_event_off(uint32_t size) { return kRingEntries + 2ull * size; }
uint64_t avail_event_off(uint32_t size) { return kRingEntries + 8ull * size; }

Result<void> check_size(uint32_t size) {
  if (vring::valid_queue_size(size)) return Ok();
  if (size == 0) return Err("queue size 0");
  if (size > vring::kMaxQueueSize)
    return Err(fmt::format("queue size {} exceeds the maximum {}", size, vring::kMaxQueueSize));
  return Err(fmt::format("queue size {} is not a power of two", size));
}

enum class Space { Uva, Gpa };

struct RingPart {
  const char* name;
  uint64_t addr;
  uint64_t bytes;
  uint64_t align;       // what the spec asks of the guest address
  uint64_t host_align;  // what our atomic accesses need of the host pointer
};

// Translates one ring part, checking the guest's alignment and that the part
// lies wholly inside one region (the rings are accessed through a single
// host pointer each).
Result<uint8_t*> translate(const GuestMemory& mem, Space space, const RingPart& part) {
  const char* what = space == Space::Uva ? "userspace address" : "gpa";
  if (part.addr % part.align != 0)
    return Err(fmt::format("{} at {} {} is not {}-byte aligned", part.name, what, hex(part.addr), part.align));
  auto host = space == Space::Uva ? mem.uva_to_host(part.addr, part.bytes) : mem.gpa_to_host(part.addr, part.bytes);
  if (!host.ok())
    return Err(fmt::format("{} at {} {} ({} bytes) is not inside guest memory: {}", part.name, what, hex(part.addr),
                           part.bytes, host.message()));
  // A region whose mmap_offset and guest address disagree in their low bits
  // hands out a misaligned host pointer even for an aligned guest address,
  // and the atomics above need natural alignment. The descriptor table is
  // only ever memcpy'd, so it needs none.
  if (reinterpret_cast<uintptr_t>(*host) % part.host_align != 0)
    return Err(
        fmt::format("{} at {} {} maps to a host address that is not {}-byte aligned (region mmap_offset "
                    "and address differ in their low bits)",
                    part.name, what, hex(part.addr), part.host_align));
  return *host;
}

struct Hosts {
  uint8_t* desc;
  uint8_t* avail;
  uint8_t* used;
};

Result<Hosts> translate_all(const GuestMemory& mem, Space space, uint32_t size, uint64_t desc, uint64_t avail,
                            uint64_t used) {
  VHU_TRY(check_size(size));
  auto d = translate(mem, space, {"descriptor table", desc, vring::desc_table_bytes(size), vring::kDescAlign, 1});
  if (!d.ok()) return d.error();
  auto a = translate(mem, space, {"avail ring", avail, vring::avail_ring_bytes(size), vring::kAvailAlign, 2});
  if (!a.ok()) return a.error();
  auto u = translate(mem, space, {"used ring", used, vring::used_ring_bytes(size), vring::kUsedAlign, 4});
  if (!u.ok()) return u.error();
  return Hosts{*d, *a, *u};
}

// An indirect table may straddle adjacent regions like any other buffer, so
// it is read through its scatter list rather than one host pointer.
vring::Desc read_table_entry(const std::vector<HostSpan>& spans, uint64_t index) {
  uint8_t raw[sizeof(vring::Desc)];
  uint64_t off = index * sizeof(vring::Desc);
  size_t got = 0;
  for (const HostSpan& s : spans) {
    if (got == sizeof raw) break;
    if (off >= s.len) {
      off -= s.len;
      continue;
    }
    const size_t take = static_cast<size_t>(std::min<uint64_t>(s.len - off, sizeof raw - got));
    std::memcpy(raw + got, s.ptr + off, take);
    got += take;
    off = 0;
  }
  vring::Desc d;
  std::memcpy(&d, raw, sizeof d);
  return d;
}

// Where a descriptor sits, for error messages only (formatted lazily: the
// success path should not pay for strings).
struct Where {
  uint32_t desc;
  int64_t entry = -1;  // index in the indirect table `desc` points at
};
std::string label(const Where& w) {
  return w.entry < 0 ? fmt::format("descriptor {}", w.desc)
                     : fmt::format("descriptor {} indirect entry {}", w.desc, w.entry);
}

// Accumulates a chain while it is walked: the checks that apply to every
// buffer descriptor, direct or indirect.
class ChainBuilder {
 public:
  ChainBuilder(const GuestMemory& mem, Chain& out) : mem_(mem), out_(out) {}

  Result<void> add(Where where, const vring::Desc& d) {
    const bool writable = (d.flags & vring::kDescFWrite) != 0;
    if (writable) {
      seen_writable_ = true;
    } else if (seen_writable_) {
      return Err(
          fmt::format("{}: device-readable descriptor follows a device-writable one (readable buffers "
                      "must come first)",
                      label(where)));
    }
    // A zero-length buffer touches no memory, so its address is not
    // checked; it is kept so the caller sees the chain as the guest built it.
    if (d.len > 0) {
      if (d.len - 1 > std::numeric_limits<uint64_t>::max() - d.addr)
        return Err(fmt::format("{}: addr {} + len {} wraps around 2^64", label(where), hex(d.addr), hex(d.len)));
      scratch_.clear();
      auto r = mem_.gpa_scatter(d.addr, d.len, scratch_);
      if (!r.ok())
        return Err(fmt::format("{}: addr {} len {} is not inside guest memory: {}", label(where), hex(d.addr),
                               hex(d.len), r.message()));
    }
    out_.segments.push_back(Segment{d.addr, d.len, writable});
    (writable ? out_.writable_bytes : out_.readable_bytes) += d.len;
    return Ok();
  }

 private:
  const GuestMemory& mem_;
  Chain& out_;
  std::vector<HostSpan> scratch_;
  bool seen_writable_ = false;
};

}  // namespace

Result<void> DeviceQueue::setup_uva(const GuestMemory& mem, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used,
                                    Options opt) {
  auto h = translate_all(mem, Space::Uva, size, desc, avail, used);
  if (!h.ok()) return h.error();
  return setup(mem, size, h->desc, h->avail, h->used, opt);
}

Result<void> DeviceQueue::setup_gpa(const GuestMemory& mem, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used,
                                    Options opt) {
  auto h = translate_all(mem, Space::Gpa, size, desc, avail, used);
  if (!h.ok()) return h.error();
  return setup(mem, size, h->desc, h->avail, h->used, opt);
}

Result<void> DeviceQueue::setup(const GuestMemory& mem, uint32_t size, uint8_t* desc, uint8_t* avail, uint8_t* used,
                                Options opt) {
  VHU_TRY(check_size(size));
  mem_ = &mem;
  desc_ = desc;
  avail_ = avail;
  used_ = used;
  size_ = size;
  opt_ = opt;
  // last_avail and used_idx survive: vhost-user sends SET_VRING_BASE before
  // SET_VRING_ADDR. The interrupt bookkeeping starts afresh, which can only
  // cost one spurious interrupt.
  signalled_valid_ = false;
  return Ok();
}

void DeviceQueue::reset() { *this = DeviceQueue{}; }

void DeviceQueue::set_last_avail(uint16_t idx) {
  last_avail_ = idx;
  used_idx_ = idx;
  signalled_valid_ = false;
}

uint16_t DeviceQueue::read_avail_idx() const { return load16(avail_ + kRingIdx, __ATOMIC_ACQUIRE); }

Result<uint16_t> DeviceQueue::pending() const {
  if (!ready()) return Err("virtqueue is not set up");
  const uint16_t idx = read_avail_idx();
  const uint16_t ahead = static_cast<uint16_t>(idx - last_avail_);
  if (ahead > size_)
    return Err(fmt::format("avail idx {} is {} ahead of last_avail {}, more than queue size {}", idx, ahead,
                           last_avail_, size_));
  return ahead;
}

Result<std::optional<Chain>> DeviceQueue::pop() {
  auto n = pending();
  if (!n.ok()) return n.error();
  if (*n == 0) return std::optional<Chain>{};
  const uint16_t head = next_head();
  if (head >= size_)
    return Err(fmt::format("avail ring entry {} (avail index {}): head {} >= queue size {}", last_avail_ % size_,
                           last_avail_, head, size_));
  Chain c;
  VHU_TRY(walk(head, c));
  ++last_avail_;
  return std::optional<Chain>{std::move(c)};
}

Result<std::optional<uint16_t>> DeviceQueue::skip() {
  auto n = pending();
  if (!n.ok()) return n.error();
  if (*n == 0) return std::optional<uint16_t>{};
  const uint16_t head = next_head();
  ++last_avail_;
  return std::optional<uint16_t>{head};
}

// Only after pending() said there is one: its acquire load of the avail index
// orders this read of the entry behind it.
uint16_t DeviceQueue::next_head() const {
  const uint16_t slot = static_cast<uint16_t>(last_avail_ % size_);
  return load16(avail_ + kRingEntries + 2ull * slot, __ATOMIC_RELAXED);
}

// The spec bounds a chain by the queue size, and says so among the indirect
// descriptor rules, so direct and indirect descriptors together may not
// exceed `size`; an indirect table itself may be larger than the chain it
// holds. A walk of more than `size` steps in the descriptor table must have
// revisited a descriptor, so it is reported as a loop, and likewise more
// steps than an indirect table has entries. Counting steps bounds the walk
// without a per-pop visited set.
Result<void> DeviceQueue::walk(uint16_t head, Chain& out) const {
  out.head = head;
  out.segments.clear();
  out.readable_bytes = 0;
  out.writable_bytes = 0;
  ChainBuilder chain(*mem_, out);

  uint32_t idx = head;
  uint32_t steps = 0;
  for (;;) {
    if (++steps > size_)
      return Err(
          fmt::format("chain from head {} loops: it reaches descriptor {} a second time after {} "
                      "descriptors (queue size {})",
                      head, idx, size_, size_));
    // Copied once: everything below looks only at this snapshot.
    vring::Desc d;
    std::memcpy(&d, desc_ + 16ull * idx, sizeof d);
    const Where where{idx};

    if (d.flags & vring::kDescFIndirect) {
      if (!opt_.indirect)
        return Err(
            fmt::format("{}: INDIRECT flag set but VIRTIO_F_RING_INDIRECT_DESC was not negotiated", label(where)));
      if (d.flags & vring::kDescFNext)
        return Err(fmt::format("{}: both INDIRECT and NEXT set (next {})", label(where), d.next));
      if (d.len == 0) return Err(fmt::format("{}: indirect table len 0", label(where)));
      if (d.len % sizeof(vring::Desc) != 0)
        return Err(fmt::format("{}: indirect table len {} is not a multiple of 16", label(where), d.len));
      const uint32_t entries = d.len / static_cast<uint32_t>(sizeof(vring::Desc));
      if (entries > vring::kMaxQueueSize)
        return Err(fmt::format("{}: indirect table len {} holds {} descriptors, more than {}", label(where), d.len,
                               entries, vring::kMaxQueueSize));
      std::vector<HostSpan> table;
      auto r = mem_->gpa_scatter(d.addr, d.len, table);
      if (!r.ok())
        return Err(fmt::format("{}: indirect table addr {} len {} is not inside guest memory: {}", label(where),
                               hex(d.addr), hex(d.len), r.message()));
      // The WRITE flag of the descriptor pointing at the table means nothing
      // ("Indirect Descriptors": the device MUST ignore it).
      const uint32_t direct = steps - 1;
      uint32_t i = 0;
      uint32_t isteps = 0;
      for (;;) {
        if (++isteps > entries)
          return Err(
              fmt::format("{}: indirect chain loops: it reaches entry {} a second time after {} entries "
                          "(table of {})",
                          label(where), i, entries, entries));
        if (direct + isteps > size_)
          return Err(
              fmt::format("chain from head {} is longer than queue size {} ({} direct descriptors, then "
                          "more than {} in the indirect table at {})",
                          head, size_, direct, size_ - direct, label(where)));
        const vring::Desc e = read_table_entry(table, i);
        const Where iwhere{idx, i};
        if (e.flags & vring::kDescFIndirect)
          return Err(fmt::format("{}: INDIRECT flag inside an indirect table (nested indirect)", label(iwhere)));
        VHU_TRY(chain.add(iwhere, e));
        if (!(e.flags & vring::kDescFNext)) return Ok();
        if (e.next >= entries)
          return Err(fmt::format("{}: next {} >= indirect table entries {}", label(iwhere), e.next, entries));
        i = e.next;
      }
    }

    VHU_TRY(chain.add(where, d));
    if (!(d.flags & vring::kDescFNext)) return Ok();
    if (d.next >= size_) return Err(fmt::format("{}: next {} >= queue size {}", label(where), d.next, size_));
    idx = d.next;
  }
}

Result<void> DeviceQueue::push(uint16_t head, uint32_t written) {
  if (!ready()) return Err("virtqueue is not set up");
  if (head >= size_) return Err(fmt::format("push: head {} >= queue size {}", head, size_));
  const uint64_t elem_off = kRingEntries + 8ull * (used_idx_ % size_);
  uint8_t* elem = used_ + elem_off;
  // Marked before the index publishes them, so that a front-end that reads
  // the log after it has seen the entry finds every page.
  log_written(head, written);
  store32(elem, head);
  store32(elem + 4, written);
  log_used(elem_off, 8);
  log_used(kRingIdx, 2);
  ++used_idx_;
  // Release: the element (and the data written into the buffers) must be
  // visible before the index that publishes them.
  store16(used_ + kRingIdx, used_idx_, __ATOMIC_RELEASE);
  return Ok();
}

void DeviceQueue::log_used(uint64_t offset, uint64_t len) const {
  if (logging_.log && logging_.used_gpa) logging_.log->mark(*logging_.used_gpa + offset, len);
}

// The chain is walked again, as it stands now: the device may have popped it
// before logging began. A chain the driver broke meanwhile is the driver's
// loss; the used entry still goes out.
void DeviceQueue::log_written(uint16_t head, uint32_t written) const {
  if (!logging_.log || !logging_.buffers || written == 0) return;
  Chain c;
  if (!walk(head, c).ok()) return;
  uint64_t left = written;
  for (const Segment& s : c.segments) {
    if (!s.writable) continue;
    const uint64_t n = std::min<uint64_t>(left, s.len);
    logging_.log->mark(s.gpa, n);
    left -= n;
    if (left == 0) break;
  }
}

uint16_t DeviceQueue::used_event() const {
  return ready() ? load16(avail_ + used_event_off(size_), __ATOMIC_RELAXED) : 0;
}

bool DeviceQueue::should_notify() {
  if (!ready()) return false;
  // The used idx store must be visible before flags/used_event are read, or
  // a driver re-enabling interrupts in between would miss this one.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!opt_.event_idx) return (load16(avail_ + kRingFlags, __ATOMIC_RELAXED) & vring::kAvailFNoInterrupt) == 0;
  const uint16_t event = load16(avail_ + used_event_off(size_), __ATOMIC_RELAXED);
  const uint16_t old = signalled_used_;
  const bool valid = signalled_valid_;
  signalled_used_ = used_idx_;
  signalled_valid_ = true;
  // Without a previous notification to measure from, notifying is the safe
  // side: the driver must tolerate spurious interrupts, not missing ones.
  return !valid || vring::need_event(event, used_idx_, old);
}

void DeviceQueue::enable_notifications(bool enable) {
  if (!ready()) return;
  if (opt_.event_idx) {
    // With EVENT_IDX the device MUST keep flags 0, so "do not kick" is an
    // event index one behind last_avail: the driver's index would have to
    // run all the way round the 16-bit space to cross it.
    const uint16_t event = enable ? last_avail_ : static_cast<uint16_t>(last_avail_ - 1);
    store16(used_ + avail_event_off(size_), event, __ATOMIC_RELAXED);
    log_used(avail_event_off(size_), 2);
  } else {
    store16(used_ + kRingFlags, enable ? 0 : vring::kUsedFNoNotify, __ATOMIC_RELAXED);
    log_used(kRingFlags, 2);
  }
  // The caller re-checks the avail idx after enabling; that read must not be
  // satisfied before this store is visible, or a kick could be lost.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

namespace {

// Walks the segments of one direction, skipping `offset` bytes, and hands
// each host piece to `copy`. Translation is repeated because the memory
// table may have changed since the chain was popped.
template <class Copy>
Result<size_t> for_each_piece(const GuestMemory& mem, const Chain& c, bool writable, uint64_t offset, size_t want,
                              Copy&& copy) {
  size_t done = 0;
  uint64_t skip = offset;
  std::vector<HostSpan> spans;
  for (size_t n = 0; n < c.segments.size() && done < want; ++n) {
    const Segment& s = c.segments[n];
    if (s.writable != writable) continue;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const uint64_t len = std::min<uint64_t>(s.len - skip, want - done);
    if (skip > std::numeric_limits<uint64_t>::max() - s.gpa)
      return Err(fmt::format("segment {}: gpa {} + offset {} wraps around 2^64", n, hex(s.gpa), hex(skip)));
    spans.clear();
    auto r = mem.gpa_scatter(s.gpa + skip, len, spans);
    if (!r.ok()) return Err(fmt::format("segment {} (gpa {} len {}): {}", n, hex(s.gpa), hex(s.len), r.message()));
    for (const HostSpan& sp : spans) {
      copy(sp.ptr, done, static_cast<size_t>(sp.len));
      done += static_cast<size_t>(sp.len);
    }
    skip = 0;
  }
  return done;
}

}  // namespace

Result<size_t> read_chain(const GuestMemory& mem, const Chain& c, uint64_t offset, std::span<uint8_t> dst) {
  return for_each_piece(mem, c, false, offset, dst.size(),
                        [&](const uint8_t* p, size_t at, size_t n) { std::memcpy(dst.data() + at, p, n); });
}

Result<size_t> write_chain(const GuestMemory& mem, const Chain& c, uint64_t offset, std::span<const uint8_t> src) {
  return for_each_piece(mem, c, true, offset, src.size(),
                        [&](uint8_t* p, size_t at, size_t n) { std::memcpy(p, src.data() + at, n); });
}

}  // namespace vhu
