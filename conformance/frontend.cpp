#include "frontend.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "failure.h"
#include "vhu/features.h"

namespace conform {

using vhu::FrontendReq;
using vhu::Message;

std::string pf_text(uint64_t mask) { return fmt::format("{:#x} ({})", mask, vhu::protocol_features_string(mask)); }
std::string vf_text(uint64_t mask, bool vsock) {
  return fmt::format("{:#x} ({})", mask, vhu::virtio_features_string(mask, vsock));
}

namespace {
uint32_t id(FrontendReq r) { return static_cast<uint32_t>(r); }
std::string name(uint32_t r) { return vhu::request_name(vhu::Plane::Frontend, r); }
}  // namespace

Frontend::Frontend(vhu::UniqueFd sock, MessageLog& log, Clock::time_point deadline)
    : ch_(std::move(sock), vhu::Plane::Frontend, vhu::ChannelLimits{.max_payload = 4096, .max_fds = vhu::kMaxFds}),
      log_(log),
      deadline_(deadline) {}

int Frontend::wait_ms(int want) const {
  if (want < 0) want = reply_timeout_ms_;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, want));
}

vhu::Result<void> Frontend::try_send(const Message& m, const std::string& note) {
  log_.record(Dir::ToBackend, m, note);
  auto r = ch_.send(m);
  if (!r) log_.record_text(Dir::ToBackend, "   (send failed: " + r.message() + ")");
  return r;
}

void Frontend::send(const Message& m, const std::string& note) {
  auto r = try_send(m, note);
  if (!r)
    fail(fmt::format("the back-end to accept {}", name(m.hdr.request)),
         fmt::format("send failed: {} (the back-end closed the connection or died)", r.message()));
}

vhu::Result<Message> Frontend::try_recv(int timeout_ms) {
  auto r = ch_.recv(timeout_ms);
  if (r) {
    log_.record(Dir::FromBackend, *r);
  } else if (r.error().kind != vhu::ErrorKind::Timeout) {
    log_.record_text(Dir::FromBackend, "(" + r.message() + ")");
  }
  return r;
}

Message Frontend::expect_reply(uint32_t request, const std::string& waiting_for) {
  const int ms = wait_ms();
  auto r = try_recv(ms);
  const std::string what = waiting_for.empty() ? "a reply to " + name(request) : waiting_for;
  if (!r) {
    switch (r.error().kind) {
      case vhu::ErrorKind::Closed: fail(what, "the back-end closed the connection");
      case vhu::ErrorKind::Timeout: fail(fmt::format("{} within {} ms", what, ms), "nothing");
      default: fail(what, "an unreadable message: " + r.message());
    }
  }
  Message m = std::move(r).value();
  if (auto v = vhu::check_header_version(m); !v)
    fail(what + " with a valid header", v.message());
  check(m.is_reply(), what + " with the reply flag (bit 2) set",
        fmt::format("flags {:#x} on {}", m.hdr.flags, name(m.hdr.request)));
  check(m.hdr.request == request, what + fmt::format(" carrying request id {} ({})", request, name(request)),
        fmt::format("request id {} ({})", m.hdr.request, name(m.hdr.request)));
  if (auto f = vhu::check_fd_count(vhu::Plane::Frontend, m); !f) fail(what + " with the right fds", f.message());
  return m;
}

Outcome Frontend::try_request(const Message& m, int timeout_ms) {
  Outcome o;
  const auto* info = vhu::request_info(vhu::Plane::Frontend, m.hdr.request);
  const bool expects = (info && info->has_own_reply()) || m.need_reply();
  if (auto s = try_send(m); !s) {
    o.kind = Outcome::Closed;
    o.text = "send failed: " + s.message();
    return o;
  }
  if (!expects) {
    o.kind = Outcome::Reply;
    o.text = "no reply expected";
    return o;
  }
  const int ms = wait_ms(timeout_ms);
  auto r = try_recv(ms);
  if (!r) {
    o.kind = r.error().kind == vhu::ErrorKind::Timeout ? Outcome::Timeout
             : r.error().kind == vhu::ErrorKind::Closed ? Outcome::Closed
                                                         : Outcome::Garbled;
    o.text = o.kind == Outcome::Timeout ? fmt::format("no reply within {} ms", ms)
             : o.kind == Outcome::Closed ? "the back-end closed the connection"
                                         : r.message();
    return o;
  }
  o.reply = std::move(r).value();
  if (!o.reply.is_reply() || o.reply.hdr.request != m.hdr.request) {
    o.kind = Outcome::Garbled;
    o.text = "unexpected message: " + vhu::describe(vhu::Plane::Frontend, o.reply);
    return o;
  }
  o.kind = Outcome::Reply;
  if (o.reply.payload.size() >= 8) std::memcpy(&o.u64, o.reply.payload.data(), 8);
  o.text = o.reply.payload.size() == 8 ? fmt::format("reply u64={:#x}", o.u64)
                                       : fmt::format("reply of {} payload bytes", o.reply.payload.size());
  return o;
}

std::optional<Message> Frontend::unsolicited(int ms) {
  auto r = try_recv(ms);
  if (r) return std::move(r).value();
  return std::nullopt;
}

bool Frontend::protocol_negotiated(unsigned b) const { return acked_protocol && vhu::has_bit(*acked_protocol, b); }
bool Frontend::reply_ack() const { return protocol_negotiated(vhu::protocol_feature::REPLY_ACK); }

bool Frontend::wants_ack(uint32_t request) const {
  if (!reply_ack()) return false;
  switch (policy_) {
    case AckPolicy::Never: return false;
    case AckPolicy::Always: return true;
    case AckPolicy::Qemu72:
      return request == id(FrontendReq::SET_MEM_TABLE) || request == id(FrontendReq::ADD_MEM_REG) ||
             request == id(FrontendReq::SET_BACKEND_REQ_FD);
  }
  return false;
}

void Frontend::send_setter(Message m, bool force_need_reply) {
  if (force_need_reply || wants_ack(m.hdr.request)) m.hdr.flags |= vhu::kFlagNeedReply;
  send(m);
  if (!m.need_reply()) return;
  Message r = expect_reply(m.hdr.request, "the REPLY_ACK of " + name(m.hdr.request));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "a u64 ack payload (8 bytes)", fmt::format("{} payload bytes", r.payload.size()));
  check(*v == 0, fmt::format("ack 0 (success) for a valid {}", name(m.hdr.request)), fmt::format("ack {:#x}", *v));
}

uint64_t Frontend::get_features() {
  send(Message::empty(id(FrontendReq::GET_FEATURES)));
  Message r = expect_reply(id(FrontendReq::GET_FEATURES));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "GET_FEATURES reply with a u64 payload", v.ok() ? "" : v.message());
  offered_features = *v;
  return *v;
}

uint64_t Frontend::get_protocol_features() {
  send(Message::empty(id(FrontendReq::GET_PROTOCOL_FEATURES)));
  Message r = expect_reply(id(FrontendReq::GET_PROTOCOL_FEATURES));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "GET_PROTOCOL_FEATURES reply with a u64 payload", v.ok() ? "" : v.message());
  offered_protocol = *v;
  return *v;
}

void Frontend::set_features(uint64_t f) {
  send_setter(Message::request_with(id(FrontendReq::SET_FEATURES), f));
  acked_features = f;
}

void Frontend::set_protocol_features(uint64_t f) {
  // Not acked: REPLY_ACK is only in force once this message has been taken.
  send(Message::request_with(id(FrontendReq::SET_PROTOCOL_FEATURES), f));
  acked_protocol = f;
}

void Frontend::set_owner() { send_setter(Message::empty(id(FrontendReq::SET_OWNER))); }

uint64_t Frontend::get_queue_num() {
  send(Message::empty(id(FrontendReq::GET_QUEUE_NUM)));
  Message r = expect_reply(id(FrontendReq::GET_QUEUE_NUM));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "GET_QUEUE_NUM reply with a u64 payload", v.ok() ? "" : v.message());
  return *v;
}

uint64_t Frontend::get_max_mem_slots() {
  send(Message::empty(id(FrontendReq::GET_MAX_MEM_SLOTS)));
  Message r = expect_reply(id(FrontendReq::GET_MAX_MEM_SLOTS));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "GET_MAX_MEM_SLOTS reply with a u64 payload", v.ok() ? "" : v.message());
  return *v;
}

namespace {
Message mem_table_message(const std::vector<vhu::MemoryRegion>& regions) {
  vhu::MemoryTable t{};
  t.nregions = static_cast<uint32_t>(regions.size());
  for (size_t i = 0; i < regions.size() && i < vhu::kMaxMemRegions; ++i) t.regions[i] = regions[i];
  Message m = Message::empty(id(FrontendReq::SET_MEM_TABLE));
  // QEMU sends only the regions in use, not the full 8-slot array.
  m.set_payload_bytes({reinterpret_cast<const uint8_t*>(&t), 8 + 32 * std::min(regions.size(), vhu::kMaxMemRegions)});
  return m;
}
}  // namespace

void Frontend::set_mem_table(const std::vector<vhu::MemoryRegion>& regions, std::vector<vhu::UniqueFd> fds) {
  Message m = mem_table_message(regions);
  m.fds = std::move(fds);
  send_setter(std::move(m));
}

void Frontend::add_mem_reg(const vhu::MemoryRegion& r, vhu::UniqueFd fd) {
  Message m = Message::request_with(id(FrontendReq::ADD_MEM_REG), vhu::MemRegionMsg{0, r});
  m.fds.push_back(std::move(fd));
  send_setter(std::move(m));
}

void Frontend::rem_mem_reg(const vhu::MemoryRegion& r) {
  send_setter(Message::request_with(id(FrontendReq::REM_MEM_REG), vhu::MemRegionMsg{0, r}));
}

void Frontend::set_vring_num(uint32_t index, uint32_t num) {
  send_setter(Message::request_with(id(FrontendReq::SET_VRING_NUM), vhu::VringState{index, num}));
}

void Frontend::set_vring_base(uint32_t index, uint32_t base) {
  send_setter(Message::request_with(id(FrontendReq::SET_VRING_BASE), vhu::VringState{index, base}));
}

void Frontend::set_vring_addr(const vhu::VringAddr& a) {
  send_setter(Message::request_with(id(FrontendReq::SET_VRING_ADDR), a));
}

uint32_t Frontend::get_vring_base(uint32_t index) {
  send(Message::request_with(id(FrontendReq::GET_VRING_BASE), vhu::VringState{index, 0}));
  Message r = expect_reply(id(FrontendReq::GET_VRING_BASE));
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, r);
  check(s.ok(), "GET_VRING_BASE reply with a vring state payload (8 bytes)", s.ok() ? "" : s.message());
  check(s->index == index, fmt::format("GET_VRING_BASE reply for ring {}", index), fmt::format("ring {}", s->index));
  return s->num;
}

void Frontend::set_vring_fd(FrontendReq req, uint32_t index, int fd) {
  uint64_t v = index;
  Message m;
  if (fd < 0) {
    v |= vhu::kVringNoFdFlag;
    m = Message::request_with(id(req), v);
  } else {
    m = Message::request_with(id(req), v);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) fail("dup of an eventfd", std::strerror(errno));
    m.fds.emplace_back(d);
  }
  send_setter(std::move(m));
}

void Frontend::set_vring_enable(uint32_t index, bool enable) {
  send_setter(Message::request_with(id(FrontendReq::SET_VRING_ENABLE), vhu::VringState{index, enable ? 1u : 0u}));
}

std::vector<uint8_t> Frontend::get_config(uint32_t offset, uint32_t size) {
  std::vector<uint8_t> zeros(size, 0);
  send(vhu::make_config_message(id(FrontendReq::GET_CONFIG), vhu::ConfigHeader{offset, size, 0}, zeros, false));
  Message r = expect_reply(id(FrontendReq::GET_CONFIG));
  auto c = vhu::payload_config(r);
  check(c.ok(), "a GET_CONFIG reply with a config payload", c.ok() ? "" : c.message());
  check(c->hdr.size == size && c->data.size() == size,
        fmt::format("GET_CONFIG reply payload matching the request (size {})", size),
        fmt::format("size {} with {} data bytes", c->hdr.size, c->data.size()));
  return c->data;
}

uint64_t Frontend::get_status() {
  send(Message::empty(id(FrontendReq::GET_STATUS)));
  Message r = expect_reply(id(FrontendReq::GET_STATUS));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "GET_STATUS reply with a u64 payload", v.ok() ? "" : v.message());
  return *v;
}

void Frontend::set_status(uint64_t s) { send_setter(Message::request_with(id(FrontendReq::SET_STATUS), s)); }

void Frontend::reset_device() { send_setter(Message::empty(id(FrontendReq::RESET_DEVICE))); }

void Frontend::set_log_base(const vhu::DirtyLog& log) {
  check(protocol_negotiated(vhu::protocol_feature::LOG_SHMFD), "LOG_SHMFD negotiated before SET_LOG_BASE",
        "not negotiated");
  Message m = Message::request_with(id(FrontendReq::SET_LOG_BASE), vhu::LogPayload{log.size(), log.offset()});
  const int fd = fcntl(log.fd().get(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) fail("a dup of the log's fd for SET_LOG_BASE", std::strerror(errno));
  m.fds.emplace_back(fd);
  const Outcome o = try_request(m);
  check(o.kind == Outcome::Reply,
        "a reply to SET_LOG_BASE (LOG_SHMFD negotiated, need_reply clear), which QEMU waits for before it goes on "
        "with the migration",
        o.text);
}

void Frontend::set_backend_req_fd() {
  auto p = vhu::socket_pair();
  if (!p) fail("a socketpair for SET_BACKEND_REQ_FD", p.message());
  backend_req_ = vhu::Channel(std::move(p->first), vhu::Plane::Backend);
  Message m = Message::empty(id(FrontendReq::SET_BACKEND_REQ_FD));
  m.fds.push_back(std::move(p->second));
  send_setter(std::move(m));
}

}  // namespace conform
