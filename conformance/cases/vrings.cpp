// Vring set-up and ring states: started/stopped, enabled/disabled.
#include <sys/socket.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "common.h"
#include "robustness_util.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

CONFORM_CASE(num_not_power_of_two,
             .id = "vrings.num_not_power_of_two",
             .requirements = {"VQ-QUEUE-SIZE", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "SET_VRING_NUM 100 (not a power of two) is refused") {
  ctx.handshake();
  expect_refused(ctx, Message::request_with(req(FrontendReq::SET_VRING_NUM), vhu::VringState{0, 100}),
                 "SET_VRING_NUM num=100");
}

CONFORM_CASE(num_too_large,
             .id = "vrings.num_too_large",
             .requirements = {"VQ-QUEUE-SIZE", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "SET_VRING_NUM 65536 (above 32768) is refused") {
  ctx.handshake();
  expect_refused(ctx, Message::request_with(req(FrontendReq::SET_VRING_NUM), vhu::VringState{0, 65536}),
                 "SET_VRING_NUM num=65536");
}

CONFORM_CASE(index_out_of_range,
             .id = "vrings.index_out_of_range",
             .requirements = {"VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "a ring index the back-end lacks (255, or past GET_QUEUE_NUM with MQ) in SET_VRING_NUM, "
                        "SET_VRING_CALL and GET_VRING_BASE is refused; no crash") {
  ctx.handshake();
  const unsigned idx = ring_index_past_device(ctx);
  if (expect_refused(ctx, Message::request_with(req(FrontendReq::SET_VRING_NUM), vhu::VringState{idx, 64}),
                     fmt::format("SET_VRING_NUM index={}", idx)))
    return;
  Message call = Message::request_with(req(FrontendReq::SET_VRING_CALL), uint64_t{idx});
  call.fds.push_back(make_eventfd());
  if (expect_refused(ctx, std::move(call), fmt::format("SET_VRING_CALL index={}", idx))) return;
  // GET_VRING_BASE has its own reply: any reply or a close, but no crash.
  auto o = ctx.fe().try_request(Message::request_with(req(FrontendReq::GET_VRING_BASE), vhu::VringState{idx, 0}));
  check(!ctx.backend().crashed(), fmt::format("the back-end to survive GET_VRING_BASE index={}", idx),
        ctx.backend().status_text());
  if (o.kind != Outcome::Closed) ctx.expect_alive(fmt::format("after GET_VRING_BASE index={}", idx));
}

CONFORM_CASE(addr_outside_memory,
             .id = "vrings.addr_outside_memory",
             .requirements = {"VU-RING-ADDR-UVA", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "SET_VRING_ADDR with a gpa given as the ring address (no region holds it as uaddr) is refused",
             .protocol_features = {pf::REPLY_ACK}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  fe.set_features(minimal_features(fe));
  fe.set_mem_table(ctx.ram().regions(), ctx.ram().dup_fds());
  GuestQueue q(ctx.ram(), 0, 64, false, 1);
  fe.set_vring_num(0, 64);
  vhu::VringAddr a = q.addr();
  // Guest-physical where a front-end virtual address belongs: a mixed-up front-end.
  a.desc_user_addr = q.dq().desc_gpa();
  a.avail_user_addr = q.dq().avail_gpa();
  a.used_user_addr = q.dq().used_gpa();
  expect_refused(ctx, Message::request_with(req(FrontendReq::SET_VRING_ADDR), a), "SET_VRING_ADDR outside every region");
}

CONFORM_CASE(call_no_fd_flag,
             .id = "vrings.call_no_fd_flag",
             .requirements = {"VU-VRING-NOFD"},
             .summary = "SET_VRING_CALL with the invalid-FD flag: accepted, and the old call fd is no longer signalled",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  tx_consume(ctx, g, 1, "before the call fd is withdrawn");
  auto& fe = ctx.fe();
  fe.set_vring_fd(FrontendReq::SET_VRING_CALL, vs::kTxQueue, -1);
  ctx.expect_alive("after SET_VRING_CALL with the invalid-FD flag");
  g.tx().take_calls();
  // Ask for a notification on the next used buffer, so that a back-end
  // still holding the old fd has a reason to signal it.
  g.tx().dq().set_used_event(g.tx().dq().last_used());
  g.tx().dq().set_no_interrupt(false);
  tx_consume(ctx, g, 2, "with polling instead of a call fd");
  check(g.tx().take_calls() == 0, "no signal on the withdrawn call fd", "the old call eventfd was signalled");
}

CONFORM_CASE(kick_no_fd_flag,
             .id = "vrings.kick_no_fd_flag",
             .requirements = {"VU-VRING-NOFD"},
             .summary = "SET_VRING_KICK with the invalid-FD flag: the back-end polls the ring (no kick needed)",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto& fe = ctx.fe();
  fe.set_vring_fd(FrontendReq::SET_VRING_KICK, vs::kTxQueue, -1);
  ctx.expect_alive("after SET_VRING_KICK with the invalid-FD flag");
  tx_consume(ctx, g, 2, "without any kick (the ring is polled)", false);
  // The first buffers may be taken by a pass the back-end makes after
  // answering the last message; these come when no message is left to answer.
  tx_consume(ctx, g, 2, "again without any kick, with no front-end message since the last ones", false);
}

CONFORM_CASE(start_on_kick,
             .id = "vrings.start_on_kick",
             .requirements = {"VU-RING-START-KICK", "VU-RING-STOPPED-NO-PROCESS", "VU-RING-START-SET-VRING-KICK"},
             .summary = "upstream: a ring with buffers waits for a kick; newest: SET_VRING_KICK alone starts it",
             .device = "vsock",
             .spec_dependent = true) {
  QemuOptions o;
  o.presignal_kick = false;
  QemuFrontend q(ctx, o);
  q.realize();
  auto& g = q.guest();
  // A buffer waits on tx before the ring is handed over; its kick fd is silent.
  g.send(g.hdr(vs::Op::RST, 41000, 49999), {}, false);
  q.start();
  if (ctx.newest()) {
    bool ok = g.wait_until([&] { return g.tx().used_idx() == 1; }, std::min(ctx.remaining_ms(), 2000));
    check(ok, "the tx buffer used without a kick (newest text: rings start with SET_VRING_KICK)",
          fmt::format("used idx {}", g.tx().used_idx()));
    return;
  }
  QuietOptions qo;
  qo.memory = false;  // rx may legitimately be idle or not; only tx matters here
  qo.calls = false;
  auto bad = watch_quiet(ctx, -1, qo);
  check(g.tx().used_idx() == 0, "the tx ring left alone until its kick fd is signalled (upstream: started by a kick)",
        fmt::format("tx used idx {} before any kick", g.tx().used_idx()));
  g.tx().kick();
  bool ok = g.wait_until([&] { return g.tx().used_idx() == 1; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, "the tx buffer used after the kick", fmt::format("used idx {}", g.tx().used_idx()));
}

CONFORM_CASE(stop_returns_index,
             .id = "vrings.stop_returns_index",
             .requirements = {"VU-GET-VRING-BASE-STOPS", "VU-GET-VRING-BASE-INDEX", "VU-RING-STOPPED-NO-PROCESS",
                              "VU-SET-VRING-BASE"},
             .summary = "after N buffers GET_VRING_BASE returns N and stops the ring; SET_VRING_BASE N + kick resumes exactly",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  tx_consume(ctx, g, 5, "before the stop");
  auto& fe = ctx.fe();
  uint32_t base = fe.get_vring_base(vs::kTxQueue);
  check(base == 5, "GET_VRING_BASE of tx = 5 (the next avail index to process)", std::to_string(base));
  // Stopped: new buffers and a kick must not be processed.
  for (int i = 0; i < 3; ++i) g.send(g.hdr(vs::Op::RST, 42000 + i, 49999), {}, false);
  g.tx().kick();
  QuietOptions qo;
  qo.memory = false;  // rx is still running
  qo.calls = false;
  qo.messages = false;
  auto bad = watch_quiet(ctx, -1, qo);
  check(g.tx().used_idx() == 5, "a stopped tx ring left alone", fmt::format("tx used idx moved to {}", g.tx().used_idx()));
  fe.set_vring_num(vs::kTxQueue, g.tx().size());
  fe.set_vring_base(vs::kTxQueue, base);
  fe.set_vring_addr(g.tx().addr());
  g.tx().new_kick_fd(true);
  fe.set_vring_fd(FrontendReq::SET_VRING_KICK, vs::kTxQueue, g.tx().kick_fd());
  if (fe.acked_protocol) fe.set_vring_enable(vs::kTxQueue, true);
  bool ok = g.wait_until([&] { return g.tx().used_idx() == 8; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, "the 3 buffers queued while stopped used after the restart (used idx 8)",
        fmt::format("used idx {}", g.tx().used_idx()));
}

CONFORM_CASE(enabled_without_protocol_features,
             .id = "vrings.enabled_without_protocol_features",
             .requirements = {"VU-RINGS-ENABLED-WITHOUT-PF"},
             .summary = "without VHOST_USER_F_PROTOCOL_FEATURES acked, rings run without SET_VRING_ENABLE",
             .device = "vsock") {
  QemuOptions o;
  o.negotiate_protocol_features = false;
  QemuFrontend q = started(ctx, o);
  tx_consume(ctx, q.guest(), 2, "with rings never enabled by message (SET_FEATURES without bit 30)");
}

CONFORM_CASE(disabled_ring_no_rx,
             .id = "vrings.disabled_ring_no_rx",
             .requirements = {"VU-RING-DISABLED", "VU-SET-VRING-ENABLE"},
             .summary = "a started but disabled rx ring gets no packets; after SET_VRING_ENABLE 1 a host connection arrives",
             .device = "vsock") {
  QemuOptions o;
  o.enable_rings = false;
  QemuFrontend q(ctx, o);
  q.realize();
  if (!ctx.fe().acked_protocol) skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  q.start();
  auto& g = q.guest();
  auto& fe = ctx.fe();
  fe.set_vring_enable(vs::kTxQueue, true);
  HostSide host = ctx.host();
  auto s = host.connect(5000);
  QuietOptions qo;
  qo.memory = false;
  qo.messages = false;
  qo.calls = false;
  watch_quiet(ctx, -1, qo);
  check(g.rx().used_idx() == 0, "no rx packet while the rx ring is disabled",
        fmt::format("rx used idx {}", g.rx().used_idx()));
  fe.set_vring_enable(vs::kRxQueue, true);
  auto p = g.wait_rx([](const RxPacket& p) { return p.hdr.op == static_cast<uint16_t>(vs::Op::REQUEST); },
                     std::min(ctx.remaining_ms(), 2000));
  if (!p) {
    // The back-end may have refused the host while disabled; a new attempt must get through.
    auto s2 = host.connect(5001);
    p = g.wait_rx([](const RxPacket& p) { return p.hdr.op == static_cast<uint16_t>(vs::Op::REQUEST); },
                  std::min(ctx.remaining_ms(), 2000));
  }
  check(p.has_value(), "a REQUEST on rx for the host's CONNECT once rx is enabled", "nothing");
}

// ---- used buffer notifications ----
//
// The runner's guest polls its used rings, so every other case passes whether
// or not the back-end ever signals a call fd; a Linux guest sleeps until it
// does. These cases make the back-end use one buffer at a time and look at
// the call fd after each.

constexpr uint32_t kNotifyGuestPort = 4600, kNotifyHostPort = 5600;

const char* ring_name(VsockGuest& g, GuestQueue& q) { return &q == &g.tx() ? "tx" : "rx"; }

// The back-end uses one buffer of `q`: on tx an RST for no connection (taken
// without an answer), on rx one byte the host writes to `host` (one RW packet).
// Returns once the used idx shows it, after a settle so that a call the
// back-end makes for it has arrived.
void use_one(Ctx& ctx, VsockGuest& g, GuestQueue& q, int host) {
  const auto target = static_cast<uint16_t>(q.used_idx() + 1);
  if (&q == &g.tx()) {
    g.send(g.hdr(vs::Op::RST, 40000, 49999), {});
  } else {
    check(::send(host, "x", 1, MSG_NOSIGNAL) == 1, "the host program's write to reach the back-end",
          fmt::format("send: {}", std::strerror(errno)));
  }
  const int ms = std::min(ctx.remaining_ms(), 2000);
  check(g.wait_until([&] { return q.used_idx() == target; }, ms),
        fmt::format("the back-end to use one {} buffer (used idx {})", ring_name(g, q), target),
        fmt::format("used idx {} after {} ms", q.used_idx(), ms));
  g.settle(ctx.cfg().quiet_window_ms);
}

// The stream whose rx packets the cases count, and the guest it runs on.
struct NotifySetup {
  NotifySetup(Ctx& ctx, QemuOptions o)
      : listener(ctx.host().listen(kNotifyHostPort)), q(started(ctx, o)),
        host(open_stream(ctx, q.guest(), kNotifyGuestPort, kNotifyHostPort, listener.get())) {}
  vhu::UniqueFd listener;
  QemuFrontend q;
  vhu::UniqueFd host;
};

CONFORM_CASE(notify_at_used_event,
             .id = "vrings.notify_at_used_event",
             .requirements = {"VQ-NOTIFY-EVENT-IDX", "VU-VRING-CALL"},
             .summary = "with VIRTIO_F_RING_EVENT_IDX, the call fd is signalled when the used entry at used_event is "
                        "written, on tx and on rx",
             .device = "vsock") {
  NotifySetup s(ctx, {});
  if (!vhu::has_bit(s.q.acked_features(), vhu::feature::RING_EVENT_IDX))
    skip("back-end does not offer VIRTIO_F_RING_EVENT_IDX");
  auto& g = s.q.guest();
  for (GuestQueue* r : {&g.tx(), &g.rx()}) {
    // The call is asked for at the second entry from now, not the first: a
    // back-end one entry early then calls at the first and not at the second.
    const auto event = static_cast<uint16_t>(r->used_idx() + 1);
    r->dq().set_used_event(event);
    r->take_calls();
    use_one(ctx, g, *r, s.host.get());
    const uint64_t early = r->take_calls();
    use_one(ctx, g, *r, s.host.get());
    const uint64_t calls = r->take_calls();
    ctx.note(fmt::format("{}: used_event {}: signalled {} at entry {}, {} at entry {}", ring_name(g, *r), event,
                         times(early), static_cast<uint16_t>(event - 1), times(calls), event));
    check(calls > 0,
          fmt::format("{}'s call fd signalled once the device wrote used entry {} (used_event {})", ring_name(g, *r),
                      event, event),
          fmt::format("no signal within {} ms{}: a Linux guest would sleep with the buffer unread",
                      ctx.cfg().quiet_window_ms, early > 0 ? " (one came at the entry before)" : ""));
  }
}

CONFORM_CASE(notify_without_event_idx,
             .id = "vrings.notify_without_event_idx",
             .requirements = {"VQ-NOTIFY-FLAGS", "VU-VRING-CALL"},
             .summary = "without VIRTIO_F_RING_EVENT_IDX and with the avail flags 0, every used buffer is signalled "
                        "on the call fd, whatever used_event holds; on tx and on rx",
             .device = "vsock") {
  QemuOptions o;
  o.guest_features &= ~vhu::bit(vhu::feature::RING_EVENT_IDX);
  NotifySetup s(ctx, o);
  auto& g = s.q.guest();
  for (GuestQueue* r : {&g.tx(), &g.rx()}) {
    r->dq().set_no_interrupt(false);
    // The field the device must ignore here, where applying it would hold
    // back the calls.
    const auto ignored = static_cast<uint16_t>(r->used_idx() + 100);
    r->dq().set_used_event(ignored);
    r->take_calls();
    for (int i = 0; i < 2; ++i) {
      use_one(ctx, g, *r, s.host.get());
      check(r->take_calls() > 0,
            fmt::format("{}'s call fd signalled for each used buffer (flags 0, EVENT_IDX not negotiated)",
                        ring_name(g, *r)),
            fmt::format("no signal within {} ms of used entry {} (used_event, which must be ignored, is {})",
                        ctx.cfg().quiet_window_ms, static_cast<uint16_t>(r->used_idx() - 1), ignored));
    }
  }
}

}  // namespace
}  // namespace conform
