#include "backend.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "faults.h"
#include "log.h"
#include "vhu/features.h"

namespace vsockref {

using vhu::bit;
using vhu::has_bit;

namespace {

// Faults only: a stopped ring that neither the err eventfd nor
// DEVICE_NEEDS_RESET tells of.
bool ring_errors_silent() {
  return VSOCKREF_FAULT(silent_ring_error) || VSOCKREF_FAULT(silent_stop_on_loop);
}

// Whether the driver is owed a call after the push()es just made. The faults
// are two ways a call goes missing that a guest polling its used rings never
// notices: one entry early under EVENT_IDX (the new used idx compared with
// used_event instead of the entry's index), and used_event read where it
// must be ignored.
bool call_due(vhu::DeviceQueue& q) {
  const bool due = q.should_notify();  // keeps its bookkeeping in every case
  if (VSOCKREF_FAULT(used_event_equals_new_idx) && q.event_idx()) return q.used_idx() == q.used_event();
  if (VSOCKREF_FAULT(used_event_without_event_idx) && !q.event_idx())
    return static_cast<uint16_t>(q.used_idx() - 1) == q.used_event();
  return due;
}

}  // namespace

Backend::Backend(EventLoop& loop, ReplySink& sink, BackendOptions opts, Router* router)
    : loop_(loop), sink_(sink), opts_(std::move(opts)), device_(loop, *this, opts_.vsock, router) {}

Backend::~Backend() { disconnect(); }

uint64_t Backend::offered_features() {
  namespace f = vhu::feature;
  const uint64_t pf = VSOCKREF_FAULT(drop_protocol_features_bit) ? 0 : bit(f::VHOST_USER_F_PROTOCOL_FEATURES);
  return VsockDevice::device_features() | bit(f::RING_INDIRECT_DESC) | bit(f::RING_EVENT_IDX) | pf |
         bit(f::VERSION_1) | bit(f::LOG_ALL);
}

uint64_t Backend::offered_protocol_features() {
  namespace p = vhu::protocol_feature;
  return bit(p::MQ) | bit(p::LOG_SHMFD) | bit(p::REPLY_ACK) | bit(p::CONFIG) | bit(p::RESET_DEVICE) |
         bit(p::CONFIGURE_MEM_SLOTS) | bit(p::STATUS) | bit(p::DEVICE_STATE);
}

// virtio 2.1.1: DEVICE_NEEDS_RESET "when it enters an error state that a
// reset is needed"; here that is a ring a malformed chain stopped, and it
// lasts until the ring is set up again (a driver reset under QEMU 7.2 does
// that without any reset message). With DRIVER_OK set the device would also
// owe a configuration change notification, which needs a back-end channel we
// do not offer, so then only the err eventfd tells. QEMU never sets DRIVER_OK
// here: SET_STATUS only ever carries FEATURES_OK in the traces.
uint8_t Backend::reported_status() const {
  if (ring_errors_silent() || (status_ & vhu::status::DRIVER_OK)) return status_;
  for (const Vring& r : rings_)
    if (r.broken) return static_cast<uint8_t>(status_ | vhu::status::DEVICE_NEEDS_RESET);
  return status_;
}

bool Backend::suspended() const {
  for (const Vring& r : rings_)
    if (r.started) return false;
  return true;
}

// ---- replies ----

void Backend::reply(const vhu::Message& req, vhu::Message&& r) {
  r.hdr.request = req.hdr.request;
  r.hdr.flags = vhu::kVersion | vhu::kFlagReply;
  if (VSOCKREF_FAULT(wrong_reply_flags)) r.hdr.flags = vhu::kVersion;
  r.hdr.size = static_cast<uint32_t>(r.payload.size());
  VLOG(Trace, "{}: reply {}", opts_.vsock.name, vhu::describe(vhu::Plane::Frontend, r));
  sink_.send(std::move(r));
}

void Backend::reply_u64(const vhu::Message& req, uint64_t v) {
  vhu::Message r;
  r.set_payload(v);
  reply(req, std::move(r));
}

// ---- message entry point ----

namespace {

// How many fds a request may carry; the rest are closed unread.
size_t allowed_fds(const vhu::Message& m) {
  const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, m.hdr.request);
  if (!info) return 0;
  switch (info->request_fds) {
    case vhu::FdRule::None: return 0;
    case vhu::FdRule::One:
    case vhu::FdRule::OptionalOne: return 1;
    case vhu::FdRule::VringFd: {
      auto v = vhu::payload_u64(vhu::Plane::Frontend, m);
      return v.ok() && (*v & vhu::kVringNoFdFlag) ? 0 : 1;
    }
    case vhu::FdRule::Regions: {
      auto t = vhu::payload_memory_table(m);
      return t.ok() ? t->size() : 0;
    }
  }
  return 0;
}

}  // namespace

Disposition Backend::handle(vhu::Message msg) {
  if (deferred_check_) {
    // The caller did not wait for the deferred reply; never block on the pipe.
    transfer_event();
    if (deferred_check_) {
      VLOG(Warn, "{}: CHECK_DEVICE_STATE overtaken by {} before the load finished: load failed", opts_.vsock.name,
           vhu::request_name(vhu::Plane::Frontend, msg.hdr.request));
      transfer_ = Transfer::Failed;
      answer_deferred_check();
    }
  }
  const std::string name = vhu::request_name(vhu::Plane::Frontend, msg.hdr.request);
  VLOG(Debug, "{}: <- {}", opts_.vsock.name, vhu::describe(vhu::Plane::Frontend, msg));
  if (VSOCKREF_FAULT(ignore_frontend_while_suspended) && suspended() &&
      std::any_of(rings_.begin(), rings_.end(), [](const Vring& r) { return r.stopped_at.has_value(); }))
    return Disposition::Continue;

  if (auto v = vhu::check_header_version(msg); !v) {
    VLOG(Error, "{}: closing the connection: {} (field flags)", opts_.vsock.name, v.message());
    return Disposition::Close;
  }
  if (msg.is_reply()) {
    VLOG(Error, "{}: closing the connection: {}: field flags = {:#x} has the reply bit set on a request",
         opts_.vsock.name, name, msg.hdr.flags);
    return Disposition::Close;
  }
  const size_t allowed = allowed_fds(msg);
  if (msg.fds.size() > allowed) {
    VLOG(Warn, "{}: {} carries {} fd(s), takes {}: closing the surplus", opts_.vsock.name, name, msg.fds.size(),
         allowed);
    if (VSOCKREF_FAULT(leak_extra_fds))
      for (size_t i = allowed; i < msg.fds.size(); ++i) (void)msg.fds[i].release();
    msg.fds.resize(allowed);
  }
  if (VSOCKREF_FAULT(accept_missing_fd) && msg.fds.empty() && msg.payload.size() == 8 &&
      (msg.hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_VRING_CALL) ||
       msg.hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_VRING_KICK) ||
       msg.hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_VRING_ERR)))
    msg.payload[1] |= 1;  // bit 8, the invalid-FD flag

  Ctx ctx{msg, name, false, false, {}};
  const HandlerFn fn = lookup(msg.hdr.request, ctx);
  if (!fn) {
    const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, msg.hdr.request);
    // Answer whenever the front-end will wait for an answer: need_reply, or
    // a request whose own reply is a u64 (a refusal fits in one).
    const bool own_u64 = info && info->reply == vhu::PayloadKind::U64;
    VLOG(Warn, "{}: {} refused: {}", opts_.vsock.name, name, ctx.refusal);
    if (msg.need_reply() || own_u64 || VSOCKREF_FAULT(reply_to_unhandled_request)) {
      const bool state_fd = msg.hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_DEVICE_STATE_FD);
      const uint64_t failed = VSOCKREF_FAULT(ack_unhandled_request_zero) ? 0 : 1;
      reply_u64(msg, state_fd ? (failed | vhu::kDeviceStateInvalidFd) : failed);
    }
    return Disposition::Continue;
  }

  auto r = (this->*fn)(ctx);
  if (!r) {
    VLOG(Error, "{}: closing the connection: {}", opts_.vsock.name, r.message());
    return Disposition::Close;
  }
  if (*r != 0) VLOG(Warn, "{}: {} failed ({})", opts_.vsock.name, name, *r);
  if (ctx.deferred) return Disposition::Wait;
  bool ack = (!ctx.replied || VSOCKREF_FAULT(ack_after_own_reply)) && msg.need_reply();
  if (VSOCKREF_FAULT(ignore_need_reply) || (VSOCKREF_FAULT(ack_only_after_set_features) && !features_set_) ||
      (VSOCKREF_FAULT(ack_only_after_get_protocol_features) && !protocol_features_asked_))
    ack = false;
  if (ack) reply_u64(msg, *r);
  run_device();
  return Disposition::Continue;
}

// ---- RingIo ----

bool Backend::ring_usable(unsigned q) const {
  if (q >= kNumQueues) return false;
  const Vring& r = rings_[q];
  // Without VHOST_USER_F_PROTOCOL_FEATURES there is no SET_VRING_ENABLE, so
  // a ring counts as enabled (INTEROP bug 2).
  const bool negotiated = protocol_features_set_ || has_bit(features_, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES) ||
                          VSOCKREF_FAULT(need_enable_without_protocol_features);
  const bool enabled =
      r.enabled || !negotiated || (VSOCKREF_FAULT(rx_on_disabled_ring) && q == vhu::vsock::kRxQueue);
  bool started = r.started;
  if (VSOCKREF_FAULT(process_while_stopped) && q == vhu::vsock::kRxQueue) started = true;
  if (VSOCKREF_FAULT(lose_kick_before_enable) && r.kick_lost) return false;
  return started && enabled && r.queue.ready() && !r.broken;
}

// "Handed over" (ring_io.h): under the upstream text a ring starts on its
// first kick, which the loop may read only after later messages (the reader
// drains the socket first); the kick fd is what says the front-end gave it.
bool Backend::ring_started(unsigned q) const {
  return q < kNumQueues && (rings_[q].started || rings_[q].kick.valid() || rings_[q].poll);
}

std::optional<vhu::Chain> Backend::pop(unsigned q) {
  Vring& r = rings_[q];
  auto c = r.queue.pop();
  if (c.ok()) return std::move(*c);
  if (VSOCKREF_FAULT(crash_on_bad_descriptor)) std::abort();
  // The second fault is a back-end whose chain walker tells loops apart from
  // other malformed chains (as a TTL-bounded iterator does) and handles them
  // differently.
  const auto steps_over = [](const vhu::Error& e) {
    return VSOCKREF_FAULT(step_over_bad_chain) ||
           (VSOCKREF_FAULT(silent_stop_on_loop) && e.message.find("loops") == std::string::npos);
  };
  // At most the ring's pending entries, each stepped over once.
  while (!c.ok() && steps_over(c.error())) {
    auto s = r.queue.skip();
    if (!s.ok() || !s->has_value()) break;
    VLOG(Warn, "{}: ring {}: {}; returned unused", opts_.vsock.name, q, c.message());
    push(q, **s, 0);
    c = r.queue.pop();
  }
  if (c.ok()) return std::move(*c);
  // A guest bug must not take the whole VM's device down with a crash, nor
  // spin on the same bad entry: the ring stops until it is set up again.
  VLOG(Error, "{}: ring {}: {}; ring stopped until the front-end sets it up again", opts_.vsock.name, q, c.message());
  r.broken = true;
  if (!ring_errors_silent()) signal(r.err);
  return std::nullopt;
}

void Backend::push(unsigned q, uint16_t head, uint32_t written) {
  Vring& r = rings_[q];
  if (auto p = r.queue.push(head, written); !p) {
    VLOG(Error, "{}: ring {}: {}", opts_.vsock.name, q, p.message());
    return;
  }
  r.notify_due = true;
}

bool Backend::rearm(unsigned q) {
  Vring& r = rings_[q];
  if (!r.queue.ready()) return false;
  r.queue.enable_notifications(true);
  auto n = r.queue.pending();
  return n.ok() && *n > 0;
}

void Backend::signal(const vhu::UniqueFd& fd) {
  if (!fd) return;
  const uint64_t one = 1;
  ssize_t n = ::write(fd.get(), &one, sizeof one);
  (void)n;  // a full or odd call fd is the front-end's problem, never ours to block on
}

void Backend::run_device() {
  if (in_device_) {
    rerun_ = true;
    return;
  }
  in_device_ = true;
  do {
    do {
      rerun_ = false;
      device_.process();
    } while (rerun_);
    for (Vring& r : rings_) {
      if (!r.notify_due) continue;
      r.notify_due = false;
      if (call_due(r.queue)) {
        signal(r.call);
        if (VSOCKREF_FAULT(keep_replaced_call_fd)) signal(r.replaced_call);
      }
    }
    device_.read_ahead();  // after the calls, so the guest wakes meanwhile
  } while (rerun_);
  in_device_ = false;
}

// ---- ring management ----

vhu::Result<void> Backend::bind_ring(unsigned q) {
  Vring& r = rings_[q];
  auto unbind = [&] {
    if (!r.queue.ready()) return;
    const uint16_t base = r.queue.last_avail();
    r.queue.reset();
    r.queue.set_last_avail(base);
  };
  if (!r.addr || r.num == 0 || mem_.num_regions() == 0) {
    unbind();
    return vhu::Ok();
  }
  vhu::DeviceQueue::Options o;
  o.indirect = has_bit(features_, vhu::feature::RING_INDIRECT_DESC);
  o.event_idx = has_bit(features_, vhu::feature::RING_EVENT_IDX);
  const vhu::VringAddr& a = *r.addr;
  auto res = VSOCKREF_FAULT(mem_table_confuse_gpa_uva)
                 ? r.queue.setup_gpa(mem_, r.num, a.desc_user_addr, a.avail_user_addr, a.used_user_addr, o)
                 : r.queue.setup_uva(mem_, r.num, a.desc_user_addr, a.avail_user_addr, a.used_user_addr, o);
  if (!res) {
    // The old pointers may refer to a mapping that is gone.
    unbind();
    return res.error();
  }
  r.queue.set_logging(logging_for(q));
  r.broken = false;
  return vhu::Ok();
}

// The spec's "Migration": with VHOST_F_LOG_ALL, every write into the buffers
// a descriptor points at is marked; used-ring writes too when the ring's
// SET_VRING_ADDR set VHOST_VRING_F_LOG, at its log_guest_addr.
vhu::DeviceQueue::Logging Backend::logging_for(unsigned q) const {
  vhu::DeviceQueue::Logging l;
  if (!log_.valid() || !has_bit(features_, vhu::feature::LOG_ALL)) return l;
  l.log = &log_;
  l.buffers = !VSOCKREF_FAULT(dirty_log_skips_buffers);
  const auto& a = rings_[q].addr;
  if (a && (a->flags & vhu::kVringFlagLog) && !VSOCKREF_FAULT(dirty_log_skips_used_ring)) {
    l.used_gpa = a->log_guest_addr;
    if (VSOCKREF_FAULT(dirty_log_used_ring_by_ring_address))
      if (auto g = mem_.uva_to_gpa(a->used_user_addr)) l.used_gpa = *g;
  }
  return l;
}

void Backend::rebind_all() {
  for (unsigned q = 0; q < kNumQueues; ++q) {
    if (auto b = bind_ring(q); !b)
      VLOG(Warn, "{}: ring {} cannot be used with this memory table: {}", opts_.vsock.name, q, b.message());
  }
}

void Backend::watch_kick(unsigned q) {
  Vring& r = rings_[q];
  if (!r.kick) return;
  set_nonblocking(r.kick.get());
  auto added = loop_.add(r.kick.get(), EPOLLIN, [this, q](uint32_t ev) { on_kick(q, ev); });
  if (!added) {
    VLOG(Warn, "{}: ring {}: kick fd cannot be watched ({}); polling the ring instead", opts_.vsock.name, q,
         added.message());
    r.poll = true;
    arm_poll_timer();
  }
}

void Backend::on_kick(unsigned q, uint32_t events) {
  Vring& r = rings_[q];
  if (!r.kick) return;
  uint64_t v;
  const ssize_t n = ::read(r.kick.get(), &v, sizeof v);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || (events & (EPOLLHUP | EPOLLERR))) {
    // Not an eventfd that stays open: stop watching rather than spin.
    VLOG(Warn, "{}: ring {}: kick fd unusable (read {}, events {:#x}); no longer watched", opts_.vsock.name, q, n,
         events);
    loop_.remove(r.kick.get());
  }
  if (!r.started) start_ring(q);
  if (r.enabled) {
    // Only a kick read here clears the fault's mark: the epoll batch may still
    // hold a stale event for the kick SET_VRING_ENABLE already swallowed.
    if (n == sizeof v) r.kick_lost = false;
  } else if (VSOCKREF_FAULT(lose_kick_before_enable)) {
    r.kick_lost = true;
  }
  run_device();
}

void Backend::arm_poll_timer() {
  if (poll_timer_) return;
  poll_timer_ = loop_.add_timer(std::chrono::milliseconds(1), [this] {
    poll_timer_ = 0;
    bool any = false;
    for (const Vring& r : rings_) any = any || (r.started && r.poll);
    if (!any) return;
    run_device();
    arm_poll_timer();
  });
}

void Backend::stop_ring(unsigned q) {
  Vring& r = rings_[q];
  if (r.started) {
    r.stopped_at = Vring::StopPoint{r.queue.last_avail(), r.addr.value_or(vhu::VringAddr{})};
  }
  r.started = false;
  r.poll = false;
  if (!VSOCKREF_FAULT(kick_restarts_stopped_ring)) {
    if (r.kick) loop_.remove(r.kick.get());
    r.kick.reset();
  }
  device_.rings_changed();
}

void Backend::reset_rings() {
  for (Vring& r : rings_) {
    if (r.kick) loop_.remove(r.kick.get());
    r = Vring{};
  }
}

void Backend::device_reset(const char* why) {
  VLOG(Info, "{}: device reset ({})", opts_.vsock.name, why);
  device_.reset();
  reset_rings();
  status_ = 0;
  features_ = 0;
  features_set_ = false;
  device_.set_features(0);
  cancel_transfer();
}

void Backend::disconnect() {
  device_.reset();
  reset_rings();
  if (!VSOCKREF_FAULT(keep_memory_on_disconnect)) mem_.clear();
  log_ = vhu::DirtyLog{};
  log_fd_.reset();
  features_ = 0;
  features_set_ = false;
  device_.set_features(0);
  protocol_features_ = 0;
  protocol_features_set_ = false;
  protocol_features_asked_ = false;
  owner_set_ = false;
  status_ = 0;
  cancel_transfer();
  transfer_ = Transfer::None;
  deferred_check_ = false;
  if (poll_timer_) loop_.cancel_timer(poll_timer_);
  poll_timer_ = 0;
}

}  // namespace vsockref
