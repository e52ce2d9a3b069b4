#include "qemu.h"

#include <fmt/format.h>

namespace conform {

using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;

QemuFrontend::QemuFrontend(Ctx& ctx, QemuOptions opt) : ctx_(ctx), opt_(opt) {}

VsockGuest& QemuFrontend::guest() { return ctx_.vsock(vhu::has_bit(acked_, vhu::feature::RING_EVENT_IDX)); }

void QemuFrontend::realize() {
  auto& f = ctx_.fe();
  uint64_t feats = f.get_features();
  if (opt_.negotiate_protocol_features && vhu::has_bit(feats, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES)) {
    uint64_t offered = f.get_protocol_features();
    f.set_protocol_features(offered & opt_.accept_protocol);
    if (f.protocol_negotiated(pf::MQ)) f.get_queue_num();
    if (f.protocol_negotiated(pf::CONFIGURE_MEM_SLOTS)) {
      mem_slots_ = true;
      f.get_max_mem_slots();
    }
    if (f.protocol_negotiated(pf::BACKEND_REQ)) f.set_backend_req_fd();
  }
  f.set_owner();
  ctx_.check_needs();
  f.get_features();
  // Call and err fds for both rings at realize; QEMU replaces the call fds at start.
  auto& g = ctx_.vsock(vhu::has_bit(feats & (opt_.guest_features | vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES)),
                                    vhu::feature::RING_EVENT_IDX));
  for (GuestQueue* q : {&g.rx(), &g.tx()}) {
    f.set_vring_fd(FrontendReq::SET_VRING_CALL, q->index(), q->call_fd());
    f.set_vring_fd(FrontendReq::SET_VRING_ERR, q->index(), q->err_fd());
  }
  if (f.protocol_negotiated(pf::CONFIG)) {
    auto cfg = f.get_config(0, vhu::vsock::kConfigSize);
    auto cid = vhu::vsock::decode_config(cfg);
    check(cid.ok() && *cid == ctx_.cid(), fmt::format("GET_CONFIG guest_cid {}", ctx_.cid()),
          cid.ok() ? fmt::format("guest_cid {}", *cid) : cid.message());
  }
}

void QemuFrontend::start() {
  auto& f = ctx_.fe();
  auto& g = guest();
  // QEMU installs the guest notifiers first, ring 1 then ring 0.
  for (GuestQueue* q : {&g.tx(), &g.rx()}) {
    q->new_call_fd();
    f.set_vring_fd(FrontendReq::SET_VRING_CALL, q->index(), q->call_fd());
  }
  uint64_t offered = f.offered_features.value_or(0);
  uint64_t want = opt_.guest_features;
  if (f.acked_protocol) want |= vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES);
  acked_ = offered & want;
  f.set_features(acked_);
  if (f.protocol_negotiated(pf::STATUS)) {
    f.get_status();
    // SET_STATUS only ever carries FEATURES_OK in the traces.
    f.set_status(vhu::status::FEATURES_OK);
  }
  if (mem_slots_) {
    if (!mem_added_)
      for (size_t i = 0; i < ctx_.ram().num_regions(); ++i) f.add_mem_reg(ctx_.ram().region(i), ctx_.ram().dup_fd(i));
    mem_added_ = true;
  } else {
    f.set_mem_table(ctx_.ram().regions(), ctx_.ram().dup_fds());
  }
  if (opt_.post_rx_before_start && !started_once_) g.post_rx_buffers();
  for (GuestQueue* q : {&g.rx(), &g.tx()}) {
    f.set_vring_num(q->index(), q->size());
    f.set_vring_base(q->index(), bases[q->index()]);
    f.set_vring_addr(q->addr());
    q->new_kick_fd(opt_.presignal_kick);
    f.set_vring_fd(FrontendReq::SET_VRING_KICK, q->index(), q->kick_fd());
  }
  if (opt_.enable_rings && f.acked_protocol) {
    for (GuestQueue* q : {&g.rx(), &g.tx()}) f.set_vring_enable(q->index(), true);
  }
  // And once more the call fds, ring 0 then ring 1 (boot trace #27, #28).
  for (GuestQueue* q : {&g.rx(), &g.tx()}) f.set_vring_fd(FrontendReq::SET_VRING_CALL, q->index(), q->call_fd());
  started_once_ = true;
}

std::array<uint32_t, 2> QemuFrontend::stop() {
  auto& f = ctx_.fe();
  auto& g = guest();
  if (f.acked_protocol)
    for (GuestQueue* q : {&g.rx(), &g.tx()}) f.set_vring_enable(q->index(), false);
  for (GuestQueue* q : {&g.rx(), &g.tx()}) bases[q->index()] = f.get_vring_base(q->index());
  for (GuestQueue* q : {&g.tx(), &g.rx()}) {
    q->new_call_fd();
    f.set_vring_fd(FrontendReq::SET_VRING_CALL, q->index(), q->call_fd());
  }
  return bases;
}

bool QemuFrontend::can_log() const {
  const Frontend& f = ctx_.fe();
  return f.protocol_negotiated(pf::LOG_SHMFD) &&
         vhu::has_bit(f.offered_features.value_or(0), vhu::feature::LOG_ALL);
}

void QemuFrontend::start_logging(const vhu::DirtyLog& log, const std::function<uint64_t(GuestQueue&)>& log_addr) {
  auto& f = ctx_.fe();
  auto& g = guest();
  check(can_log(), "LOG_SHMFD negotiated and VHOST_F_LOG_ALL offered, for QEMU to migrate the device",
        ctx_.negotiated());
  f.set_log_base(log);
  // QEMU 10 asks for an ack of both (REPLY_ACK negotiated).
  const bool ack = f.reply_ack();
  const auto id = [](FrontendReq r) { return static_cast<uint32_t>(r); };
  f.send_setter(vhu::Message::request_with(id(FrontendReq::SET_FEATURES), acked_ | vhu::bit(vhu::feature::LOG_ALL)),
                ack);
  // QEMU re-reads the status after SET_FEATURES; FEATURES_OK is already set.
  if (f.protocol_negotiated(pf::STATUS)) f.get_status();
  for (GuestQueue* q : {&g.rx(), &g.tx()}) {
    vhu::VringAddr a = q->addr();
    a.flags = vhu::kVringFlagLog;
    a.log_guest_addr = log_addr ? log_addr(*q) : q->dq().used_gpa();
    f.send_setter(vhu::Message::request_with(id(FrontendReq::SET_VRING_ADDR), a), ack);
  }
}

void QemuFrontend::guest_reset() {
  auto& g = guest();
  g.reset_rings(1, 0);
  bases = {0, 0};
  started_once_ = false;
}

}  // namespace conform
