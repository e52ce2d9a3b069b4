#include "vhu/messages.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace vhu {
namespace {

constexpr RequestInfo kFrontend[] = {
#define VHU_X(name, id, rq, rqfd, rp, rpfd, text) \
  {id, #name, PayloadKind::rq, FdRule::rqfd, PayloadKind::rp, FdRule::rpfd, SpecText::text},
    VHU_FRONTEND_REQUESTS(VHU_X)
#undef VHU_X
};

constexpr RequestInfo kBackend[] = {
#define VHU_X(name, id, rq, rqfd, rp, rpfd, text) \
  {id, #name, PayloadKind::rq, FdRule::rqfd, PayloadKind::rp, FdRule::rpfd, SpecText::text},
    VHU_BACKEND_REQUESTS(VHU_X)
#undef VHU_X
};

template <class T>
Result<T> exact(Plane plane, const Message& m, std::string_view what) {
  if (m.payload.size() != sizeof(T))
    return Err(fmt::format("{}: {} payload must be {} bytes, got {} (header size {})",
                           request_name(plane, m.hdr.request), what, sizeof(T), m.payload.size(),
                           m.hdr.size));
  T out;
  std::memcpy(&out, m.payload.data(), sizeof(T));
  return out;
}

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

std::string describe_payload(Plane plane, PayloadKind kind, const Message& m) {
  auto bad = [&](const std::string& why) { return fmt::format("<{}: {}>", payload_kind_name(kind), why); };
  switch (kind) {
    case PayloadKind::None:
      return m.payload.empty() ? std::string{} : fmt::format("<{} unexpected bytes>", m.payload.size());
    case PayloadKind::U64: {
      auto v = payload_u64(plane, m);
      if (!v) return bad("size " + std::to_string(m.payload.size()));
      return hex(*v);
    }
    case PayloadKind::VringState: {
      auto s = payload_vring_state(plane, m);
      if (!s) return bad("size " + std::to_string(m.payload.size()));
      return fmt::format("{{index={} num={}}}", s->index, s->num);
    }
    case PayloadKind::VringAddr: {
      auto a = payload_vring_addr(m);
      if (!a) return bad("size " + std::to_string(m.payload.size()));
      return fmt::format("{{index={} flags={:#x} desc={:#x} used={:#x} avail={:#x} log={:#x}}}", a->index,
                         a->flags, a->desc_user_addr, a->used_user_addr, a->avail_user_addr, a->log_guest_addr);
    }
    case PayloadKind::MemoryTable: {
      auto t = payload_memory_table(m);
      if (!t) return bad(t.message());
      std::string out = fmt::format("{{nregions={}", t->size());
      for (const auto& r : *t)
        out += fmt::format(" [gpa={:#x} size={:#x} uaddr={:#x} off={:#x}]", r.guest_phys_addr, r.memory_size,
                           r.userspace_addr, r.mmap_offset);
      return out + "}";
    }
    case PayloadKind::MemRegion: {
      auto r = payload_mem_region(m);
      if (!r) return bad("size " + std::to_string(m.payload.size()));
      return fmt::format("{{gpa={:#x} size={:#x} uaddr={:#x} off={:#x}}}", r->region.guest_phys_addr,
                         r->region.memory_size, r->region.userspace_addr, r->region.mmap_offset);
    }
    case PayloadKind::Config: {
      auto c = payload_config(m);
      if (!c) return bad(c.message());
      std::string data;
      for (size_t i = 0; i < c->data.size() && i < 16; ++i) data += fmt::format("{:02x}", c->data[i]);
      if (c->data.size() > 16) data += "...";
      return fmt::format("{{offset={} size={} flags={} data={}}}", c->hdr.offset, c->hdr.size, c->hdr.flags, data);
    }
    case PayloadKind::DeviceStateParams: {
      auto p = payload_device_state(m);
      if (!p) return bad("size " + std::to_string(m.payload.size()));
      return fmt::format("{{direction={} phase={}}}",
                         p->direction == kTransferSave   ? "save"
                         : p->direction == kTransferLoad ? "load"
                                                         : std::to_string(p->direction),
                         p->phase == kPhaseStopped ? "stopped" : std::to_string(p->phase));
    }
    default:
      return fmt::format("<{} bytes>", m.payload.size());
  }
}

}  // namespace

namespace {
// Ids are small and dense; a table indexed by id answers every message's
// lookup (the fuzz targets make one per message) without a scan.
constexpr uint32_t kIdSlots = 64;

template <size_t N>
constexpr std::array<int8_t, kIdSlots> index_by_id(const RequestInfo (&list)[N]) {
  std::array<int8_t, kIdSlots> slot{};
  slot.fill(-1);
  for (size_t i = 0; i < N; ++i) {
    // Evaluated at compile time: an id past the table or listed twice stops the build.
    if (list[i].id >= kIdSlots || slot[list[i].id] != -1) throw "request id out of range or listed twice";
    slot[list[i].id] = static_cast<int8_t>(i);
  }
  return slot;
}
constexpr auto kFrontendSlot = index_by_id(kFrontend);
constexpr auto kBackendSlot = index_by_id(kBackend);
static_assert(std::size(kFrontend) < 128 && std::size(kBackend) < 128);
}  // namespace

const RequestInfo* request_info(Plane plane, uint32_t id) {
  if (id >= kIdSlots) return nullptr;
  const int8_t i = (plane == Plane::Frontend ? kFrontendSlot : kBackendSlot)[id];
  if (i < 0) return nullptr;
  return plane == Plane::Frontend ? &kFrontend[i] : &kBackend[i];
}

std::span<const RequestInfo> all_requests(Plane plane) {
  if (plane == Plane::Frontend) return kFrontend;
  return kBackend;
}

std::string request_name(Plane plane, uint32_t id) {
  const RequestInfo* r = request_info(plane, id);
  return r ? std::string(r->name) : fmt::format("UNKNOWN({})", id);
}

std::string_view payload_kind_name(PayloadKind k) {
  switch (k) {
    case PayloadKind::None: return "none";
    case PayloadKind::U64: return "u64";
    case PayloadKind::VringState: return "vring state";
    case PayloadKind::VringAddr: return "vring address";
    case PayloadKind::MemoryTable: return "memory table";
    case PayloadKind::MemRegion: return "memory region";
    case PayloadKind::Log: return "log";
    case PayloadKind::Iotlb: return "iotlb";
    case PayloadKind::Config: return "config";
    case PayloadKind::Inflight: return "inflight";
    case PayloadKind::Shared: return "shared object";
    case PayloadKind::DeviceStateParams: return "device state params";
    case PayloadKind::VringArea: return "vring area";
    case PayloadKind::MMap: return "mmap request";
    case PayloadKind::ShmemConfig: return "shmem config";
    case PayloadKind::Opaque: return "opaque";
  }
  return "?";
}

std::optional<size_t> fixed_payload_size(PayloadKind k) {
  switch (k) {
    case PayloadKind::None: return 0;
    case PayloadKind::U64: return sizeof(uint64_t);
    case PayloadKind::VringState: return sizeof(VringState);
    case PayloadKind::VringAddr: return sizeof(VringAddr);
    case PayloadKind::MemRegion: return sizeof(MemRegionMsg);
    case PayloadKind::Log: return sizeof(LogPayload);
    case PayloadKind::Iotlb: return sizeof(IotlbMsg);
    case PayloadKind::Inflight: return sizeof(InflightPayload);
    case PayloadKind::Shared: return sizeof(SharedObject);
    case PayloadKind::DeviceStateParams: return sizeof(DeviceStateParams);
    case PayloadKind::VringArea: return sizeof(VringArea);
    case PayloadKind::MMap: return sizeof(MMapRequest);
    case PayloadKind::MemoryTable:
    case PayloadKind::Config:
    case PayloadKind::ShmemConfig:
    case PayloadKind::Opaque: return std::nullopt;
  }
  return std::nullopt;
}

Result<uint64_t> payload_u64(Plane plane, const Message& m) { return exact<uint64_t>(plane, m, "u64"); }
Result<VringState> payload_vring_state(Plane plane, const Message& m) {
  return exact<VringState>(plane, m, "vring state");
}
Result<VringAddr> payload_vring_addr(const Message& m) {
  return exact<VringAddr>(Plane::Frontend, m, "vring address");
}
Result<MemRegionMsg> payload_mem_region(const Message& m) {
  return exact<MemRegionMsg>(Plane::Frontend, m, "memory region");
}
Result<DeviceStateParams> payload_device_state(const Message& m) {
  return exact<DeviceStateParams>(Plane::Frontend, m, "device state transfer parameters");
}
Result<InflightPayload> payload_inflight(const Message& m) {
  return exact<InflightPayload>(Plane::Frontend, m, "inflight");
}
Result<LogPayload> payload_log(const Message& m) { return exact<LogPayload>(Plane::Frontend, m, "log"); }

uint64_t gpa_end(std::span<const MemoryRegion> regions) {
  uint64_t end = 0;
  for (const MemoryRegion& r : regions) end = std::max(end, r.guest_phys_addr + r.memory_size);
  return end;
}

Result<std::vector<MemoryRegion>> payload_memory_table(const Message& m) {
  const std::string name = request_name(Plane::Frontend, m.hdr.request);
  constexpr size_t kHead = offsetof(MemoryTable, regions);
  if (m.payload.size() < kHead)
    return Err(fmt::format("{}: memory table payload of {} bytes is shorter than its {}-byte header", name,
                           m.payload.size(), kHead));
  uint32_t n;
  std::memcpy(&n, m.payload.data(), sizeof(n));
  if (n > kMaxMemRegions)
    return Err(fmt::format("{}: nregions {} exceeds the maximum of {}", name, n, kMaxMemRegions));
  const size_t exact_size = kHead + n * sizeof(MemoryRegion);
  if (m.payload.size() != exact_size && m.payload.size() != sizeof(MemoryTable))
    return Err(fmt::format("{}: nregions {} needs a payload of {} bytes (or {}), got {}", name, n, exact_size,
                           sizeof(MemoryTable), m.payload.size()));
  std::vector<MemoryRegion> out(n);
  if (n) std::memcpy(out.data(), m.payload.data() + kHead, n * sizeof(MemoryRegion));
  return out;
}

Result<ConfigPayload> payload_config(const Message& m) {
  const std::string name = request_name(Plane::Frontend, m.hdr.request);
  if (m.payload.size() < sizeof(ConfigHeader))
    return Err(fmt::format("{}: config payload of {} bytes is shorter than its {}-byte header", name,
                           m.payload.size(), sizeof(ConfigHeader)));
  ConfigPayload out;
  std::memcpy(&out.hdr, m.payload.data(), sizeof(ConfigHeader));
  if (out.hdr.size > kMaxConfigSize)
    return Err(fmt::format("{}: config size {} exceeds the maximum of {}", name, out.hdr.size, kMaxConfigSize));
  if (m.payload.size() != sizeof(ConfigHeader) + out.hdr.size)
    return Err(fmt::format("{}: config size {} needs a payload of {} bytes, got {}", name, out.hdr.size,
                           sizeof(ConfigHeader) + out.hdr.size, m.payload.size()));
  out.data.assign(m.payload.begin() + sizeof(ConfigHeader), m.payload.end());
  return out;
}

Message make_config_message(uint32_t request, const ConfigHeader& hdr, std::span<const uint8_t> data,
                            bool reply) {
  Message m;
  m.hdr.request = request;
  m.hdr.flags = kVersion | (reply ? kFlagReply : 0);
  std::vector<uint8_t> bytes(sizeof(ConfigHeader) + data.size());
  std::memcpy(bytes.data(), &hdr, sizeof(hdr));
  if (!data.empty()) std::memcpy(bytes.data() + sizeof(hdr), data.data(), data.size());
  m.set_payload_bytes(bytes);
  return m;
}

Result<void> check_fd_count(Plane plane, const Message& m) {
  const RequestInfo* info = request_info(plane, m.hdr.request);
  const size_t n = m.fds.size();
  const std::string name = request_name(plane, m.hdr.request);
  const char* side = m.is_reply() ? " reply" : "";
  if (!info) {
    if (n) return Err(fmt::format("{}{}: unknown request carries {} fd(s)", name, side, n));
    return Ok();
  }
  const FdRule rule = m.is_reply() ? info->reply_fds : info->request_fds;
  switch (rule) {
    case FdRule::None:
      if (n) return Err(fmt::format("{}{}: carries {} fd(s), takes none", name, side, n));
      return Ok();
    case FdRule::One:
      if (n != 1) return Err(fmt::format("{}{}: carries {} fd(s), takes exactly 1", name, side, n));
      return Ok();
    case FdRule::OptionalOne:
      if (n > 1) return Err(fmt::format("{}{}: carries {} fd(s), takes at most 1", name, side, n));
      return Ok();
    case FdRule::VringFd: {
      auto v = payload_u64(plane, m);
      if (!v) return v.error();
      const bool nofd = (*v & kVringNoFdFlag) != 0;
      if (nofd && n) return Err(fmt::format("{}: no-fd flag set but {} fd(s) attached", name, n));
      if (!nofd && n != 1)
        return Err(fmt::format("{}: no-fd flag clear, needs exactly 1 fd, got {}", name, n));
      return Ok();
    }
    case FdRule::Regions: {
      auto t = payload_memory_table(m);
      if (!t) return t.error();
      if (n != t->size())
        return Err(fmt::format("{}: {} region(s) but {} fd(s) attached", name, t->size(), n));
      return Ok();
    }
  }
  return Ok();
}

Result<void> check_header_version(const Message& m) {
  if ((m.hdr.flags & kFlagVersionMask) != kVersion)
    return Err(fmt::format("{}: header version {} (flags {:#x}), expected {}",
                           request_name(Plane::Frontend, m.hdr.request), m.hdr.flags & kFlagVersionMask,
                           m.hdr.flags, kVersion));
  return Ok();
}

std::string describe(Plane plane, const Message& m) {
  const RequestInfo* info = request_info(plane, m.hdr.request);
  std::string out = request_name(plane, m.hdr.request);
  if (m.is_reply()) out += " reply";
  if (m.need_reply()) out += " need_reply";
  if ((m.hdr.flags & kFlagVersionMask) != kVersion) out += fmt::format(" version={}", m.hdr.flags & kFlagVersionMask);
  if (info) {
    const std::string body = describe_payload(plane, m.is_reply() ? info->reply : info->request, m);
    // A plain u64 ack answers requests that have no reply of their own.
    if (m.is_reply() && !info->has_own_reply() && m.payload.size() == sizeof(uint64_t))
      out += " ack=" + describe_payload(plane, PayloadKind::U64, m);
    else if (!body.empty())
      out += " " + body;
  } else if (!m.payload.empty()) {
    out += fmt::format(" <{} bytes>", m.payload.size());
  }
  if (!m.fds.empty()) out += fmt::format(" +{} fd", m.fds.size());
  return out;
}

}  // namespace vhu
