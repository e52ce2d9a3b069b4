#include "vhu/fuzz_fds.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace vhu::fuzz {

namespace {

// The first sizeof(T) bytes of a payload, zero-filled when it is shorter.
template <class T>
T leading(const std::vector<uint8_t>& payload) {
  T v{};
  if (!payload.empty()) std::memcpy(&v, payload.data(), std::min(payload.size(), sizeof v));
  return v;
}

uint64_t memfd_bytes(uint64_t size, uint64_t offset) {
  const uint64_t end = size + offset;
  if (end < size || end > kMaxMemfdBytes) return kMaxMemfdBytes;
  return std::max<uint64_t>(end, 1);
}

size_t rule_count(const Message& m) {
  const RequestInfo* info = request_info(Plane::Frontend, m.hdr.request);
  if (!info) return 0;
  switch (info->request_fds) {
    case FdRule::None: return 0;
    case FdRule::One:
    case FdRule::OptionalOne: return 1;
    case FdRule::VringFd: return (leading<uint64_t>(m.payload) & kVringNoFdFlag) ? 0 : 1;
    case FdRule::Regions: return std::min<size_t>(leading<uint32_t>(m.payload), kMaxMemRegions);
  }
  return 0;
}

}  // namespace

size_t named_fd_count(const framing::RecordHeader& h) { return h.fds == 0 ? 0 : std::min<size_t>(h.fds - 1u, kMaxFds); }

size_t fd_count(const framing::RecordHeader& h, const Message& m) {
  return h.fds == 0 ? rule_count(m) : named_fd_count(h);
}

FdPlan plan_fd(const Message& m, size_t i, uint8_t aux) {
  FdPlan p;
  switch (static_cast<FrontendReq>(m.hdr.request)) {
    case FrontendReq::SET_MEM_TABLE: {
      const auto t = leading<MemoryTable>(m.payload);
      const MemoryRegion& r = t.regions[i % kMaxMemRegions];
      p.kind = FdKind::Memfd;
      p.memfd_bytes = memfd_bytes(r.memory_size, r.mmap_offset);
      break;
    }
    case FrontendReq::ADD_MEM_REG:
    case FrontendReq::REM_MEM_REG: {
      const auto r = leading<MemRegionMsg>(m.payload);
      p.kind = FdKind::Memfd;
      p.memfd_bytes = memfd_bytes(r.region.memory_size, r.region.mmap_offset);
      break;
    }
    case FrontendReq::SET_LOG_BASE: {
      const auto l = leading<LogPayload>(m.payload);
      p.kind = FdKind::Memfd;
      p.memfd_bytes = memfd_bytes(l.mmap_size, l.mmap_offset);
      break;
    }
    case FrontendReq::SET_DEVICE_STATE_FD:
      p.kind = FdKind::StatePipe;
      p.load = leading<DeviceStateParams>(m.payload).direction == kTransferLoad;
      break;
    case FrontendReq::SET_VRING_KICK: {
      // Rings 4 and up exist in no vsock device; the back-end refuses them.
      const auto v = leading<uint64_t>(m.payload) & kVringIndexMask;
      if (v < 4) p.kick_ring = static_cast<uint8_t>(v);
      break;
    }
    default:
      break;
  }
  // A front-end can hand over any fd at all where the spec says eventfd.
  if (p.kind == FdKind::Eventfd && (aux & (framing::kAuxHungUp | framing::kAuxRegularFile))) {
    p.kind = (aux & framing::kAuxRegularFile) ? FdKind::RegularFile : FdKind::HungUpPipe;
    p.kick_ring.reset();  // kActionKick writes to eventfds only
  }
  return p;
}

}  // namespace vhu::fuzz
