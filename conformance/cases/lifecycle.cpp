// What QEMU 7.2 really does to a vsock back-end (shared/traces/qemu-7.2-*):
// boot, stop/cont, guest driver reset, quit. Verdict each time: nothing the
// guest or the host queued is lost or duplicated, and data keeps flowing.
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

constexpr uint32_t kHostPort = 1234;   // the trace's probe connects to CID 2 port 1234
constexpr uint32_t kGuestPort = 4219;

// Boot as in qemu-7.2-vhost-user-vsock-boot.txt: realize, then DRIVER_OK with
// 128 rx buffers posted and the guest's REQUEST already on tx. The stream
// that REQUEST opens is `conn`, its host end `host`.
struct Booted {
  Booted(Ctx& ctx, QemuOptions o);
  VsockGuest& guest() { return q.guest(); }
  QemuFrontend q;
  vhu::UniqueFd listener;
  vhu::UniqueFd host;
  GuestConn* conn = nullptr;
};

Booted::Booted(Ctx& ctx, QemuOptions o) : q(ctx, o) {
  listener = ctx.host().listen(kHostPort);
  q.realize();
  auto& g = q.guest();
  g.post_rx_buffers();
  conn = &g.connect(kGuestPort, kHostPort);  // queued, not yet seen: the ring is not handed over
  q.start();
  const int ms = std::min(ctx.remaining_ms(), 3000);
  host = accept_timeout(listener.get(), ms);
  check(host.valid(), "the back-end to connect to <uds>_1234 for the REQUEST queued before DRIVER_OK",
        "no connection (the pre-signalled kick or the enable was lost)");
  bool ok = g.wait_until([&] { return conn->established || conn->reset; }, ms);
  check(ok && conn->established, "a RESPONSE on rx", conn->reset ? "RST" : "nothing");
}

CONFORM_CASE(boot,
             .id = "lifecycle.boot",
             .requirements = {"QEMU-START-SEQUENCE", "QEMU-KICK-PRESIGNALLED", "QEMU-STOP-SEQUENCE",
                              "VU-GET-VRING-BASE-INDEX", "VU-RING-START-KICK"},
             .summary = "QEMU 7.2 boot: start with rx buffers and a REQUEST waiting, data both ways, poweroff stop",
             .device = "vsock",
             .timeout_ms = 10000) {
  Booted s(ctx, without_mem_slots());
  auto& g = s.guest();
  exchange(ctx, g, *s.conn, s.host.get(), "boot");
  g.reclaim_tx();
  const uint16_t tx_avail = g.tx().dq().avail_idx();
  auto bases = s.q.stop();
  check(bases[vs::kTxQueue] == tx_avail,
        fmt::format("GET_VRING_BASE of tx = {} (every tx buffer processed)", tx_avail),
        std::to_string(bases[vs::kTxQueue]));
  check(bases[vs::kRxQueue] == g.rx().used_idx(),
        fmt::format("GET_VRING_BASE of rx = {} (the rx buffers used)", g.rx().used_idx()),
        std::to_string(bases[vs::kRxQueue]));
}

void stop_cont(Ctx& ctx, QemuOptions o) {
  Booted s(ctx, o);
  auto& q = s.q;
  auto& g = s.guest();
  exchange(ctx, g, *s.conn, s.host.get(), "before stop");
  for (int round = 1; round <= 2; ++round) {
    // The guest queues data and kicks just before `stop`; the host writes while stopped.
    const std::string up = fmt::format("queued before stop {};", round);
    const std::string down = fmt::format("written while stopped {};", round);
    g.write(*s.conn, up);
    q.stop();
    const size_t before = s.conn->received.size();
    check(write_all(s.host.get(), down), "the host socket to take data", "write failed");
    expect_quiet(ctx, fmt::format("while stopped (stop #{})", round));
    q.start();  // cont, with the bases GET_VRING_BASE returned
    std::string got = read_n(s.host.get(), up.size(), std::min(ctx.remaining_ms(), 2000));
    check(got == up, fmt::format("the host to read \"{}\" exactly once across stop/cont", up),
          fmt::format("\"{}\"", got));
    bool ok = g.wait_until([&] { return s.conn->received.size() >= before + down.size(); },
                           std::min(ctx.remaining_ms(), 2000));
    std::string in = s.conn->received.substr(before);
    check(ok && in == down, fmt::format("the guest to receive \"{}\" exactly once after cont", down),
          fmt::format("\"{}\"", in));
    exchange(ctx, g, *s.conn, s.host.get(), fmt::format("after cont {}", round));
  }
  expect_no_anomalies(g, "no stray or malformed rx packets");
}

CONFORM_CASE(stop_cont,
             .id = "lifecycle.stop_cont",
             .requirements = {"QEMU-START-SEQUENCE", "QEMU-STOP-SEQUENCE", "QEMU-MEM-TABLE-EACH-START",
                              "VU-SUSPENDED", "VU-GET-VRING-BASE-INDEX", "VU-SET-VRING-BASE"},
             .summary = "QEMU 7.2 stop/cont twice with data in flight both ways: nothing lost or duplicated",
             .device = "vsock",
             .timeout_ms = 15000) {
  stop_cont(ctx, without_mem_slots());
}

CONFORM_CASE(stop_cont_mem_slots,
             .id = "lifecycle.stop_cont_mem_slots",
             .requirements = {"QEMU-ADD-MEM-REG-ONCE", "QEMU-STOP-SEQUENCE", "VU-SUSPENDED", "VU-ADD-MEM-REG"},
             .summary = "as stop_cont, with CONFIGURE_MEM_SLOTS: ADD_MEM_REG once, no memory message on cont",
             .device = "vsock",
             .protocol_features = {pf::CONFIGURE_MEM_SLOTS},
             .timeout_ms = 15000) {
  stop_cont(ctx, QemuOptions{});
}

CONFORM_CASE(kick_before_enable,
             .id = "lifecycle.kick_before_enable",
             .requirements = {"QEMU-KICK-PRESIGNALLED", "VU-RING-START-KICK"},
             .summary = "a kick that arrives before SET_VRING_ENABLE(1) is not lost (rust-vmm/vhost #247)",
             .device = "vsock",
             .timeout_ms = 10000) {
  QemuOptions o = without_mem_slots();
  o.enable_rings = false;
  QemuFrontend q(ctx, o);
  auto listener = ctx.host().listen(kHostPort);
  q.realize();
  if (!ctx.fe().acked_protocol) skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  auto& g = q.guest();
  auto& c = g.connect(kGuestPort, kHostPort);
  q.start();  // kick fds pre-signalled, no enable yet
  g.tx().kick();
  for (GuestQueue* qq : {&g.rx(), &g.tx()}) ctx.fe().set_vring_enable(qq->index(), true);
  auto host = accept_timeout(listener.get(), std::min(ctx.remaining_ms(), 3000));
  check(host.valid(), "the REQUEST kicked before SET_VRING_ENABLE(1) processed once the ring is enabled",
        "no connection to the host: the kick was lost");
  bool ok = g.wait_until([&] { return c.established || c.reset; }, std::min(ctx.remaining_ms(), 3000));
  check(ok && c.established, "a RESPONSE on rx", c.reset ? "RST" : "nothing");
  exchange(ctx, g, c, host.get(), "after a late enable");
}

CONFORM_CASE(call_fd_replaced,
             .id = "lifecycle.call_fd_replaced",
             .requirements = {"QEMU-START-SEQUENCE"},
             .summary = "after QEMU's repeated SET_VRING_CALL only the latest call fd is signalled",
             .device = "vsock",
             .timeout_ms = 10000) {
  Booted s(ctx, without_mem_slots());
  auto& g = s.guest();
  // A stale fd from before the last SET_VRING_CALL must stay silent.
  vhu::UniqueFd stale = make_eventfd();
  ctx.fe().set_vring_fd(FrontendReq::SET_VRING_CALL, vs::kRxQueue, stale.get());
  ctx.fe().set_vring_fd(FrontendReq::SET_VRING_CALL, vs::kRxQueue, g.rx().call_fd());
  g.rx().take_calls();
  g.rx().dq().set_used_event(g.rx().dq().last_used());
  g.rx().dq().set_no_interrupt(false);
  exchange(ctx, g, *s.conn, s.host.get(), "after call fds were replaced");
  check(eventfd_take(stale.get()) == 0, "no signal on a replaced call fd", "the replaced call eventfd was signalled");
}

CONFORM_CASE(guest_reset,
             .id = "lifecycle.guest_reset",
             .requirements = {"QEMU-GUEST-RESET", "QEMU-STOP-SEQUENCE", "VU-SET-VRING-BASE"},
             .summary = "guest driver reset: stop, new ring addresses with base 0, start; a new stream works",
             .device = "vsock",
             .timeout_ms = 15000) {
  Booted s(ctx, without_mem_slots());
  auto& q = s.q;
  auto& g = s.guest();
  exchange(ctx, g, *s.conn, s.host.get(), "before the reset");
  q.stop();
  q.guest_reset();
  auto listener2 = ctx.host().listen(kHostPort + 1);
  g.post_rx_buffers();
  auto& c2 = g.connect(kGuestPort + 1, kHostPort + 1);
  q.start();
  auto host2 = accept_timeout(listener2.get(), std::min(ctx.remaining_ms(), 3000));
  check(host2.valid(), "the REQUEST queued in the new rings processed after the guest reset", "no connection");
  bool ok = g.wait_until([&] { return c2.established || c2.reset; }, std::min(ctx.remaining_ms(), 3000));
  check(ok && c2.established, "a RESPONSE in the new rx ring", c2.reset ? "RST" : "nothing");
  exchange(ctx, g, c2, host2.get(), "after the guest reset");
}

CONFORM_CASE(frontend_quit,
             .id = "lifecycle.frontend_quit",
             .requirements = {"QEMU-QUIT-CLOSES", "VU-RECONNECT"},
             .summary = "the front-end closes the socket without a word mid-traffic; the back-end survives (and serves anew)",
             .device = "vsock",
             .timeout_ms = 15000) {
  {
    Booted s(ctx, without_mem_slots());
    exchange(ctx, s.guest(), *s.conn, s.host.get(), "before quit");
    write_all(s.host.get(), "in flight at quit;");
  }
  std::string why;
  Frontend* f = ctx.reconnect(&why);
  check(!ctx.backend().crashed(), "the back-end to survive the front-end closing the socket",
        ctx.backend().status_text());
  if (!f) {
    ctx.note("back-end accepted no second connection (optional): " + why);
    return;
  }
  QemuFrontend q2(ctx, without_mem_slots());
  q2.realize();
  q2.guest_reset();
  q2.start();
  tx_consume(ctx, q2.guest(), 2, "on the new connection after quit");
}

}  // namespace
}  // namespace conform
