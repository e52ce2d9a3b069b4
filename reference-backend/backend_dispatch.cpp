// The request table and one handler per supported front-end request.
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

#include "backend.h"
#include "faults.h"
#include "log.h"
#include "vhu/features.h"
#include "vhu/split_ring.h"

namespace vsockref {

using vhu::FrontendReq;
using vhu::has_bit;
namespace pf = vhu::protocol_feature;

namespace {

// What a request needs before it is legal.
enum class Gate : uint8_t {
  None,
  ProtocolFeatures,  // VHOST_USER_F_PROTOCOL_FEATURES negotiated
  Pf,                // the protocol feature in `pf_bit` negotiated
};

struct Entry {
  FrontendReq req;
  Backend::HandlerFn fn;
  Gate gate;
  unsigned pf_bit;
};

}  // namespace

// Friend-free access to private member pointers: the table is built inside a
// member function.
Backend::HandlerFn Backend::lookup(uint32_t id, Ctx& ctx) const {
  static const Entry kTable[] = {
      {FrontendReq::GET_FEATURES, &Backend::get_features, Gate::None, 0},
      {FrontendReq::SET_FEATURES, &Backend::set_features, Gate::None, 0},
      {FrontendReq::GET_PROTOCOL_FEATURES, &Backend::get_protocol_features, Gate::None, 0},
      {FrontendReq::SET_PROTOCOL_FEATURES, &Backend::set_protocol_features, Gate::None, 0},
      {FrontendReq::SET_OWNER, &Backend::set_owner, Gate::None, 0},
      {FrontendReq::RESET_OWNER, &Backend::reset_owner, Gate::None, 0},
      {FrontendReq::SET_MEM_TABLE, &Backend::set_mem_table, Gate::None, 0},
      {FrontendReq::SET_LOG_BASE, &Backend::set_log_base, Gate::Pf, pf::LOG_SHMFD},
      {FrontendReq::SET_LOG_FD, &Backend::set_log_fd, Gate::Pf, pf::LOG_SHMFD},
      {FrontendReq::SET_VRING_NUM, &Backend::set_vring_num, Gate::None, 0},
      {FrontendReq::SET_VRING_ADDR, &Backend::set_vring_addr, Gate::None, 0},
      {FrontendReq::SET_VRING_BASE, &Backend::set_vring_base, Gate::None, 0},
      {FrontendReq::GET_VRING_BASE, &Backend::get_vring_base, Gate::None, 0},
      {FrontendReq::SET_VRING_KICK, &Backend::set_vring_kick, Gate::None, 0},
      {FrontendReq::SET_VRING_CALL, &Backend::set_vring_call, Gate::None, 0},
      {FrontendReq::SET_VRING_ERR, &Backend::set_vring_err, Gate::None, 0},
      {FrontendReq::SET_VRING_ENABLE, &Backend::set_vring_enable, Gate::ProtocolFeatures, 0},
      {FrontendReq::GET_QUEUE_NUM, &Backend::get_queue_num, Gate::Pf, pf::MQ},
      {FrontendReq::GET_CONFIG, &Backend::get_config, Gate::Pf, pf::CONFIG},
      {FrontendReq::SET_CONFIG, &Backend::set_config, Gate::Pf, pf::CONFIG},
      {FrontendReq::RESET_DEVICE, &Backend::reset_device, Gate::Pf, pf::RESET_DEVICE},
      {FrontendReq::GET_MAX_MEM_SLOTS, &Backend::get_max_mem_slots, Gate::Pf, pf::CONFIGURE_MEM_SLOTS},
      {FrontendReq::ADD_MEM_REG, &Backend::add_mem_reg, Gate::Pf, pf::CONFIGURE_MEM_SLOTS},
      {FrontendReq::REM_MEM_REG, &Backend::rem_mem_reg, Gate::Pf, pf::CONFIGURE_MEM_SLOTS},
      {FrontendReq::SET_STATUS, &Backend::set_status, Gate::Pf, pf::STATUS},
      {FrontendReq::GET_STATUS, &Backend::get_status, Gate::Pf, pf::STATUS},
      {FrontendReq::SET_DEVICE_STATE_FD, &Backend::set_device_state_fd, Gate::Pf, pf::DEVICE_STATE},
      {FrontendReq::CHECK_DEVICE_STATE, &Backend::check_device_state, Gate::Pf, pf::DEVICE_STATE},
  };
  // Indexed by request id once, so dispatch is one array access.
  static const auto kById = [] {
    std::array<const Entry*, 64> by{};
    for (const Entry& e : kTable) by[static_cast<uint32_t>(e.req)] = &e;
    return by;
  }();

  const Entry* e = id < kById.size() ? kById[id] : nullptr;
  if (!e) {
    ctx.refusal = vhu::request_info(vhu::Plane::Frontend, id) ? "not supported by this back-end"
                                                               : "unknown request id";
    return nullptr;
  }
  switch (e->gate) {
    case Gate::None: break;
    case Gate::ProtocolFeatures:
      if (!protocol_features_set_ && !has_bit(features_, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES)) {
        ctx.refusal = "VHOST_USER_F_PROTOCOL_FEATURES was not negotiated";
        return nullptr;
      }
      break;
    case Gate::Pf:
      if (!has_bit(protocol_features_, e->pf_bit) &&
          !(VSOCKREF_FAULT(device_state_lax_params) && e->pf_bit == pf::DEVICE_STATE)) {
        ctx.refusal = fmt::format("protocol feature {} was not negotiated", vhu::protocol_feature_name(e->pf_bit));
        return nullptr;
      }
      break;
  }
  return e->fn;
}

vhu::Result<unsigned> Backend::ring_index(const Ctx& c, uint64_t index) const {
  if (index >= kNumQueues && VSOCKREF_FAULT(wrap_ring_index)) return static_cast<unsigned>(index % kNumQueues);
  if (index >= kNumQueues)
    return vhu::Err(fmt::format("{}: field index = {} names no vsock ring (0 rx, 1 tx, 2 event)", c.name, index));
  return static_cast<unsigned>(index);
}

// ---- features ----

vhu::Result<uint64_t> Backend::get_features(Ctx& c) {
  reply_u64(c.msg, offered_features());
  c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::set_features(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  const uint64_t unoffered = *v & ~offered_features();
  features_ = *v & offered_features();
  features_set_ = true;
  device_.set_features(features_);
  // "upon receiving a VHOST_USER_SET_FEATURES message from the front-end
  // without VHOST_USER_F_PROTOCOL_FEATURES set, the back-end must enable all
  // rings immediately."
  if (!has_bit(*v, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES) &&
      !VSOCKREF_FAULT(need_enable_without_protocol_features))
    for (Vring& r : rings_) r.enabled = true;
  rebind_all();  // INDIRECT_DESC and EVENT_IDX change how rings are walked
  device_.rings_changed();
  if (unoffered) {
    VLOG(Warn, "{}: SET_FEATURES: field u64 has bits {:#x} ({}) that were not offered", opts_.vsock.name, unoffered,
         vhu::virtio_features_string(unoffered));
    return 1;
  }
  return 0;
}

vhu::Result<uint64_t> Backend::get_protocol_features(Ctx& c) {
  protocol_features_asked_ = true;
  reply_u64(c.msg, offered_protocol_features());
  c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::set_protocol_features(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  const uint64_t unoffered = *v & ~offered_protocol_features();
  protocol_features_ = *v & offered_protocol_features();
  protocol_features_set_ = true;
  if (unoffered) {
    VLOG(Warn, "{}: SET_PROTOCOL_FEATURES: field u64 has bits {:#x} ({}) that were not offered", opts_.vsock.name,
         unoffered, vhu::protocol_features_string(unoffered));
    return 1;
  }
  return 0;
}

vhu::Result<uint64_t> Backend::set_owner(Ctx&) {
  if (VSOCKREF_FAULT(refuse_set_owner)) return 1;
  owner_set_ = true;
  return 0;
}

vhu::Result<uint64_t> Backend::reset_owner(Ctx&) {
  // Deprecated; the spec recommends ignoring it, since back-ends that
  // discarded state on it broke.
  VLOG(Info, "{}: RESET_OWNER ignored (deprecated)", opts_.vsock.name);
  return 0;
}

vhu::Result<uint64_t> Backend::reset_device(Ctx&) {
  // "disable all rings and reset all internal device state to the initial
  // state"; the memory table belongs to the session and stays (QEMU 10 does
  // not re-send it after a reset).
  const uint8_t status = status_;
  device_reset("RESET_DEVICE");
  if (VSOCKREF_FAULT(keep_status_on_reset)) status_ = status;
  return 0;
}

// ---- memory ----

namespace {

// Faults that skip one SET_MEM_TABLE check. The region that check would have
// refused is acked but left out of the table, so that the faulty binary
// itself never maps or touches it.
bool skips_check(const vhu::MemoryRegion& r, int fd, const std::vector<vhu::MemoryRegion>& kept) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (VSOCKREF_FAULT(accept_zero_size_region) && r.memory_size == 0) return true;
  if (VSOCKREF_FAULT(accept_wrapping_region) && r.memory_size != 0 &&
      (r.memory_size - 1 > kMax - r.guest_phys_addr || r.memory_size - 1 > kMax - r.userspace_addr))
    return true;
  if (VSOCKREF_FAULT(accept_region_beyond_file)) {
    struct stat st {};
    const uint64_t size = ::fstat(fd, &st) == 0 && st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (r.mmap_offset > size || r.memory_size > size - r.mmap_offset) return true;
  }
  // Ranges that wrap are another check's business.
  if (VSOCKREF_FAULT(accept_overlapping_regions) && r.memory_size != 0 &&
      r.memory_size - 1 <= kMax - r.guest_phys_addr)
    for (const vhu::MemoryRegion& k : kept)
      if (r.guest_phys_addr - k.guest_phys_addr < k.memory_size ||
          k.guest_phys_addr - r.guest_phys_addr < r.memory_size)
        return true;
  return false;
}

void drop_unchecked_regions(std::vector<vhu::MemoryRegion>& regions, std::vector<vhu::UniqueFd>& fds) {
  std::vector<vhu::MemoryRegion> kept_regions;
  std::vector<vhu::UniqueFd> kept_fds;
  for (size_t i = 0; i < regions.size(); ++i) {
    if (skips_check(regions[i], fds[i].get(), kept_regions)) continue;
    kept_regions.push_back(regions[i]);
    kept_fds.push_back(std::move(fds[i]));
  }
  regions.swap(kept_regions);
  fds.swap(kept_fds);
}

}  // namespace

vhu::Result<uint64_t> Backend::set_mem_table(Ctx& c) {
  auto t = vhu::payload_memory_table(c.msg);
  if (!t) return t.error();
  if (VSOCKREF_FAULT(accept_fd_count_mismatch) && c.msg.fds.size() < t->size()) t->resize(c.msg.fds.size());
  if (c.msg.fds.size() != t->size())
    return vhu::Err(fmt::format("SET_MEM_TABLE: field nregions = {} but {} fd(s) attached", t->size(),
                                c.msg.fds.size()));
  if (VSOCKREF_FAULT(keep_first_mem_table) && mem_.num_regions() > 0) return 0;
  drop_unchecked_regions(*t, c.msg.fds);
  if (VSOCKREF_FAULT(ignore_mmap_offset))
    for (vhu::MemoryRegion& m : *t) m.mmap_offset = 0;
  auto r = mem_.set_table(*t, std::move(c.msg.fds));
  if (!r) {
    VLOG(Warn, "{}: SET_MEM_TABLE refused: {}", opts_.vsock.name, r.message());
    return 1;
  }
  if (!VSOCKREF_FAULT(keep_rings_on_new_mem_table)) rebind_all();
  return 0;
}

// The list of requests that need a reply names SET_LOG_BASE (with
// LOG_SHMFD), and QEMU waits for one without setting need_reply, while the
// request's own entry says "reply payload: N/A". QEMU checks only the
// reply's id; ours is a u64, 0 when the log is mapped.
vhu::Result<uint64_t> Backend::set_log_base(Ctx& c) {
  auto p = vhu::payload_log(c.msg);
  if (!p) return p.error();
  if (c.msg.fds.size() != 1) return vhu::Err("SET_LOG_BASE: no fd attached for the log");
  uint64_t result = 0;
  const uint64_t offset = VSOCKREF_FAULT(ignore_log_offset) ? 0 : p->mmap_offset;
  if (auto log = vhu::DirtyLog::map(c.msg.fds[0], p->mmap_size, offset); !log) {
    VLOG(Warn, "{}: SET_LOG_BASE refused: {}", opts_.vsock.name, log.message());
    result = 1;
  } else if (VSOCKREF_FAULT(keep_first_log) && log_.valid()) {
    VLOG(Debug, "{}: SET_LOG_BASE: fault keep_first_log, the new log is dropped", opts_.vsock.name);
  } else {
    // A front-end switches logs while logging (QEMU's vhost_dev_log_resize),
    // then reads and frees the old one: from here on only this one is marked.
    log_ = std::move(*log);
    const uint64_t end = vhu::gpa_end(mem_.regions());
    if (end > log_.covered())
      VLOG(Warn, "{}: SET_LOG_BASE: the log covers guest addresses below {:#x}, guest memory reaches {:#x}; writes "
                 "beyond go unmarked",
           opts_.vsock.name, log_.covered(), end);
    for (unsigned q = 0; q < kNumQueues; ++q)
      if (rings_[q].queue.ready()) rings_[q].queue.set_logging(logging_for(q));
  }
  if (!VSOCKREF_FAULT(no_log_base_reply)) reply_u64(c.msg, result);
  c.replied = true;
  return result;
}

vhu::Result<uint64_t> Backend::set_log_fd(Ctx& c) {
  if (c.msg.fds.size() != 1) return vhu::Err("SET_LOG_FD: no fd attached");
  log_fd_ = std::move(c.msg.fds[0]);
  return 0;
}

vhu::Result<uint64_t> Backend::get_max_mem_slots(Ctx& c) {
  reply_u64(c.msg, mem_.max_regions() - (VSOCKREF_FAULT(understate_max_mem_slots) ? 1 : 0));
  c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::add_mem_reg(Ctx& c) {
  auto m = vhu::payload_mem_region(c.msg);
  if (!m) return m.error();
  if (c.msg.fds.size() != 1) return vhu::Err("ADD_MEM_REG: no fd attached for the region");
  auto r = mem_.add_region(m->region, std::move(c.msg.fds[0]));
  if (!r) {
    VLOG(Warn, "{}: ADD_MEM_REG refused: {}", opts_.vsock.name, r.message());
    return 1;
  }
  rebind_all();
  return 0;
}

vhu::Result<uint64_t> Backend::rem_mem_reg(Ctx& c) {
  auto m = vhu::payload_mem_region(c.msg);
  if (!m) return m.error();
  if (VSOCKREF_FAULT(keep_rem_mem_reg_fd) && !c.msg.fds.empty()) (void)c.msg.fds[0].release();
  auto r = mem_.remove_region(m->region);
  if (!r) {
    VLOG(Warn, "{}: REM_MEM_REG refused: {}", opts_.vsock.name, r.message());
    return 1;
  }
  rebind_all();
  return 0;
}

// ---- rings ----

vhu::Result<uint64_t> Backend::set_vring_num(Ctx& c) {
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, c.msg);
  if (!s) return s.error();
  auto q = ring_index(c, s->index);
  if (!q) return q.error();
  bool size_ok = vhu::vring::valid_queue_size(s->num) && s->num <= opts_.max_queue_size;
  // Each fault keeps one half of the check.
  if (VSOCKREF_FAULT(accept_num_not_power_of_two) && s->num != 0 && s->num <= opts_.max_queue_size) size_ok = true;
  if (VSOCKREF_FAULT(accept_num_too_large) && std::has_single_bit(s->num)) size_ok = true;
  if (!size_ok) {
    VLOG(Warn, "{}: SET_VRING_NUM: field num = {} is not a power of two up to {}", opts_.vsock.name, s->num,
         opts_.max_queue_size);
    return 1;
  }
  rings_[*q].num = s->num;
  if (auto b = bind_ring(*q); !b) VLOG(Debug, "{}: ring {} not usable yet: {}", opts_.vsock.name, *q, b.message());
  return 0;
}

vhu::Result<uint64_t> Backend::set_vring_addr(Ctx& c) {
  auto a = vhu::payload_vring_addr(c.msg);
  if (!a) return a.error();
  auto q = ring_index(c, a->index);
  if (!q) return q.error();
  // log_guest_addr means something only with VHOST_VRING_F_LOG (QEMU always
  // fills it in), and then only while LOG_ALL is negotiated (logging_for).
  rings_[*q].addr = *a;
  if (auto b = bind_ring(*q); !b) {
    VLOG(Warn, "{}: SET_VRING_ADDR ring {}: {}", opts_.vsock.name, *q, b.message());
    return VSOCKREF_FAULT(accept_vring_addr_outside_memory) ? 0 : 1;
  }
  return 0;
}

vhu::Result<uint64_t> Backend::set_vring_base(Ctx& c) {
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, c.msg);
  if (!s) return s.error();
  auto q = ring_index(c, s->index);
  if (!q) return q.error();
  if (s->num > 0xffff) {
    VLOG(Warn, "{}: SET_VRING_BASE: field num = {:#x} does not fit a split ring's 16-bit index", opts_.vsock.name,
         s->num);
    return 1;
  }
  rings_[*q].queue.set_last_avail(static_cast<uint16_t>(s->num));
  return 0;
}

vhu::Result<uint64_t> Backend::get_vring_base(Ctx& c) {
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, c.msg);
  if (!s) return s.error();
  auto q = ring_index(c, s->index);
  if (!q) return q.error();
  if (VSOCKREF_FAULT(no_reply_unready_ring) && !rings_[*q].queue.ready()) return 0;
  // Everything popped has been pushed already (the device completes each
  // chain before it returns), so nothing is in flight to drain.
  const uint16_t base = rings_[*q].queue.last_avail();
  stop_ring(*q);
  vhu::VringState st{s->index, VSOCKREF_FAULT(get_vring_base_returns_zero) ? 0u : base};
  vhu::Message r;
  r.set_payload(st);
  reply(c.msg, std::move(r));
  c.replied = true;
  return 0;
}

namespace {
struct VringFdArg {
  uint64_t index;
  bool nofd;
};
VringFdArg vring_fd_arg(uint64_t v) { return {v & vhu::kVringIndexMask, (v & vhu::kVringNoFdFlag) != 0}; }
}  // namespace

vhu::Result<uint64_t> Backend::set_vring_kick(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  const auto arg = vring_fd_arg(*v);
  auto q = ring_index(c, arg.index);
  if (!q) return q.error();
  if (!arg.nofd && c.msg.fds.empty())
    return vhu::Err(fmt::format("SET_VRING_KICK: field u64 = {:#x} has no no-fd flag but no fd is attached", *v));
  Vring& r = rings_[*q];
  if (r.kick) loop_.remove(r.kick.get());
  r.kick = arg.nofd ? vhu::UniqueFd{} : std::move(c.msg.fds[0]);
  r.poll = arg.nofd && !VSOCKREF_FAULT(no_poll_without_kick_fd);
  r.broken = false;
  r.kick_lost = false;
  watch_kick(*q);
  // Newest text: "Rings are started with VHOST_USER_SET_VRING_KICK". Upstream
  // text: the back-end "must start a ring upon receiving a kick" and must not
  // process it before; a ring that polls (no-fd flag) has no kick to wait for.
  // QEMU hands over a kick fd that is already signalled, so under both texts
  // it starts at once (README, "Ring states").
  const bool start_now = opts_.spec == vhu::SpecText::Newest ? !VSOCKREF_FAULT(wait_for_kick_newest)
                                                             : VSOCKREF_FAULT(start_ring_before_kick);
  if (arg.nofd || start_now) start_ring(*q);
  return 0;
}

void Backend::start_ring(unsigned q) {
  Vring& r = rings_[q];
  // A driver that re-initialised the ring (guest reset under QEMU 7.2, which
  // has no RESET_DEVICE) shows up as a restart with other addresses or base:
  // its connections are gone, so ours must go too (README, "Resets").
  if (r.stopped_at) {
    const bool same = r.stopped_at->base == r.queue.last_avail() && r.addr &&
                      std::memcmp(&r.stopped_at->addr, &*r.addr, sizeof(vhu::VringAddr)) == 0;
    if (!same) {
      VLOG(Info, "{}: ring {} restarted at base {} (stopped at {}) or moved: the driver was reset", opts_.vsock.name,
           q, r.queue.last_avail(), r.stopped_at->base);
      device_.reset();
    }
    r.stopped_at.reset();
  }
  r.started = true;
  if (r.poll) arm_poll_timer();
  device_.rings_changed();
}

vhu::Result<uint64_t> Backend::set_vring_call(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  const auto arg = vring_fd_arg(*v);
  auto q = ring_index(c, arg.index);
  if (!q) return q.error();
  if (!arg.nofd && c.msg.fds.empty())
    return vhu::Err(fmt::format("SET_VRING_CALL: field u64 = {:#x} has no no-fd flag but no fd is attached", *v));
  if (arg.nofd && VSOCKREF_FAULT(keep_call_fd_on_nofd)) return 0;
  Vring& r = rings_[*q];
  // Replacing closes the old fd: QEMU sends a new one on every start and stop.
  if (VSOCKREF_FAULT(keep_replaced_call_fd) && !arg.nofd) r.replaced_call = std::move(r.call);
  r.call = arg.nofd ? vhu::UniqueFd{} : std::move(c.msg.fds[0]);
  if (r.call) set_nonblocking(r.call.get());
  if (VSOCKREF_FAULT(call_while_suspended) && suspended()) signal(r.call);
  return 0;
}

vhu::Result<uint64_t> Backend::set_vring_err(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  const auto arg = vring_fd_arg(*v);
  auto q = ring_index(c, arg.index);
  if (!q) return q.error();
  if (!arg.nofd && c.msg.fds.empty())
    return vhu::Err(fmt::format("SET_VRING_ERR: field u64 = {:#x} has no no-fd flag but no fd is attached", *v));
  Vring& r = rings_[*q];
  r.err = arg.nofd ? vhu::UniqueFd{} : std::move(c.msg.fds[0]);
  if (r.err) set_nonblocking(r.err.get());
  return 0;
}

vhu::Result<uint64_t> Backend::set_vring_enable(Ctx& c) {
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, c.msg);
  if (!s) return s.error();
  auto q = ring_index(c, s->index);
  if (!q) return q.error();
  if (s->num > 1) {
    VLOG(Warn, "{}: SET_VRING_ENABLE: field num = {} is neither 0 nor 1", opts_.vsock.name, s->num);
    return 1;
  }
  Vring& r = rings_[*q];
  if (VSOCKREF_FAULT(lose_kick_before_enable) && s->num == 1 && !r.enabled && r.kick) {
    // rust-vmm/vhost #247: the kick that came while disabled is consumed and
    // forgotten, whether or not the loop had seen it yet.
    uint64_t v;
    if (::read(r.kick.get(), &v, sizeof v) == sizeof v || r.started) r.kick_lost = true;
  }
  r.enabled = s->num == 1;
  device_.rings_changed();
  if (VSOCKREF_FAULT(no_ack_for_vring_enable)) c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::get_queue_num(Ctx& c) {
  reply_u64(c.msg, kNumQueues);
  c.replied = true;
  return 0;
}

// ---- config and status ----

vhu::Result<uint64_t> Backend::get_config(Ctx& c) {
  auto p = vhu::payload_config(c.msg);
  if (!p) return p.error();
  auto cfg = device_.config();
  // Fault reserved_guest_cid: only a read of the upper half shows it, so a
  // front-end reading all 8 bytes at once (QEMU) never notices.
  if (VSOCKREF_FAULT(reserved_guest_cid) && p->hdr.offset >= 4 && cfg.size() > 4) cfg[4] = 1;
  const uint64_t end = uint64_t{p->hdr.offset} + p->hdr.size;
  if (end > cfg.size() && VSOCKREF_FAULT(config_bounds_in_32_bits) && static_cast<uint32_t>(end) <= cfg.size()) {
    // The wrapped range passes; its bytes come from where the wrapped offset
    // lands, never from outside the config.
    std::vector<uint8_t> data(p->hdr.size);
    for (size_t i = 0; i < data.size(); ++i) data[i] = cfg[(p->hdr.offset + i) % cfg.size()];
    reply(c.msg, vhu::make_config_message(static_cast<uint32_t>(FrontendReq::GET_CONFIG), p->hdr, data, true));
    c.replied = true;
    return 0;
  }
  if (end > cfg.size()) {
    // "vhost-user back-end uses zero length of payload to indicate an error"
    VLOG(Warn, "{}: GET_CONFIG: field offset = {} size = {} reaches past the {}-byte config", opts_.vsock.name,
         p->hdr.offset, p->hdr.size, cfg.size());
    reply(c.msg, vhu::Message{});
    c.replied = true;
    return 0;
  }
  const uint32_t from = VSOCKREF_FAULT(config_ignores_offset) ? 0 : p->hdr.offset;
  vhu::Message r = vhu::make_config_message(static_cast<uint32_t>(FrontendReq::GET_CONFIG), p->hdr,
                                            std::span<const uint8_t>(cfg.data() + from, p->hdr.size), true);
  reply(c.msg, std::move(r));
  c.replied = true;
  device_.config_read();
  return 0;
}

vhu::Result<uint64_t> Backend::set_config(Ctx& c) {
  auto p = vhu::payload_config(c.msg);
  if (!p) return p.error();
  const auto cfg = device_.config();
  const uint64_t end = uint64_t{p->hdr.offset} + p->hdr.size;
  if (end > cfg.size()) {
    VLOG(Warn, "{}: SET_CONFIG: field offset = {} size = {} reaches past the {}-byte config", opts_.vsock.name,
         p->hdr.offset, p->hdr.size, cfg.size());
    return 1;
  }
  // guest_cid is the only field and it is read-only: "back-ends MUST NOT
  // accept SET_CONFIG for read-only configuration space fields unless the
  // live migration bit is set". With it, only the value we have is accepted:
  // the CID is this back-end's identity on the host side.
  const bool same = std::memcmp(cfg.data() + p->hdr.offset, p->data.data(), p->hdr.size) == 0;
  if (p->hdr.flags == vhu::kConfigFlagLiveMigration && same) return 0;
  if (VSOCKREF_FAULT(ack_read_only_set_config)) return 0;
  VLOG(Warn, "{}: SET_CONFIG refused: guest_cid is read-only (field flags = {})", opts_.vsock.name, p->hdr.flags);
  return 1;
}

vhu::Result<uint64_t> Backend::get_status(Ctx& c) {
  reply_u64(c.msg, reported_status());
  c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::set_status(Ctx& c) {
  auto v = vhu::payload_u64(vhu::Plane::Frontend, c.msg);
  if (!v) return v.error();
  if (*v > 0xff) {
    VLOG(Warn, "{}: SET_STATUS: field u64 = {:#x} is not a status byte", opts_.vsock.name, *v);
    return 1;
  }
  if (*v == 0) {
    device_reset("status 0");
    return 0;
  }
  if (VSOCKREF_FAULT(forget_status)) return 0;
  // QEMU writes back what GET_STATUS read with FEATURES_OK added
  // (vhost_user_add_status), so a NEEDS_RESET we reported comes back here.
  status_ = static_cast<uint8_t>(*v & ~vhu::status::DEVICE_NEEDS_RESET);
  // A device that cannot work with the acked features leaves FEATURES_OK
  // clear for the driver to see (virtio 3.1.1).
  if ((status_ & vhu::status::FEATURES_OK) && !has_bit(features_, vhu::feature::VERSION_1)) {
    status_ &= static_cast<uint8_t>(~vhu::status::FEATURES_OK);
    VLOG(Warn, "{}: SET_STATUS: FEATURES_OK without VERSION_1 acked; cleared", opts_.vsock.name);
  }
  return 0;
}

}  // namespace vsockref
