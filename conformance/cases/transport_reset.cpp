// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET after a device-state load (virtio 1.3
// 5.10.6.6, seed 000). The virtio text puts no MUST on the device here; its
// MUSTs are the driver's: on the event it shuts down every connection and
// fetches guest_cid again. The device-side rules follow from those: whatever
// reaches the guest before the event belongs to a connection the event then
// tears down, and a host connection that arrives before the driver has
// re-read its CID reaches a driver still in the middle of the reset. So:
// event first, host connections only after the config re-read. Where the
// front-end keeps the event queue itself (QEMU), the back-end cannot send
// the event and must not wait for it.
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>

#include "common.h"
#include "state_transfer.h"

namespace conform {
namespace {

using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

constexpr uint32_t kEventRingSize = 16;

QemuOptions restore_options() {
  QemuOptions o;
  // DEVICE_STATE is bit 19: QEMU 10 and crosvm accept it. Memory goes in one
  // SET_MEM_TABLE, as crosvm sends it.
  o.accept_protocol = ((1ull << 20) - 1) & ~vhu::bit(pf::CONFIGURE_MEM_SLOTS);
  return o;
}

// The guest's event queue (ring 2) with a few 8-byte device-writable buffers.
class EventRing {
 public:
  EventRing(Ctx& ctx, bool event_idx) : ram_(ctx.ram()), q_(ctx.ram(), vs::kEventQueue, kEventRingSize, event_idx, 0) {}

  GuestQueue& queue() { return q_; }

  // Posts n buffers and kicks (the driver replenishing the event queue).
  void post(unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
      const uint64_t gpa = ram_.alloc(8, 8, 0);
      std::memset(ram_.host(gpa, 8), 0xa5, 8);
      vhu::DriverBuffer b{gpa, 8, true};
      auto head = q_.dq().add({&b, 1});
      if (!head) throw std::runtime_error("suite bug: event add: " + head.message());
      bufs_[*head] = gpa;
    }
    q_.dq().publish();
    q_.kick();
  }

  // The next used event buffer: its id, or a description of what is wrong with it.
  std::optional<std::pair<uint32_t, std::string>> take() {
    auto u = q_.dq().pop_used();
    if (!u) return std::nullopt;
    auto it = bufs_.find(static_cast<uint16_t>(u->id));
    if (it == bufs_.end()) return std::pair<uint32_t, std::string>{~0u, fmt::format("used id {} was never posted", u->id)};
    if (u->len < vs::kEventSize)
      return std::pair<uint32_t, std::string>{~0u, fmt::format("used len {} (an event is 4 bytes)", u->len)};
    auto ev = vs::decode_event({ram_.host(it->second, vs::kEventSize), vs::kEventSize});
    return std::pair<uint32_t, std::string>{*ev, fmt::format("event id {}", *ev)};
  }

 private:
  GuestRam& ram_;
  GuestQueue q_;
  std::map<uint16_t, uint64_t> bufs_;
};

// Source side and destination side of a restore on one back-end: a save on a
// first connection, then, on a fresh one, the load where QEMU 10 and crosvm
// put it (before any memory or ring). Returns with the device loaded.
void restore(Ctx& ctx, QemuFrontend& q) {
  q.realize();
  auto blob = save_device_state(ctx);
  std::string why;
  if (!ctx.reconnect(&why)) skip("a restore needs a second front-end connection after the save: " + why);
  q.realize();
  load_device_state(ctx, blob);
}

// One ring set up from base 0 and handed over with a pre-signalled kick.
void hand_over(Frontend& f, GuestQueue& r) {
  f.set_vring_num(r.index(), r.size());
  f.set_vring_base(r.index(), 0);
  f.set_vring_addr(r.addr());
  f.set_vring_fd(FrontendReq::SET_VRING_CALL, r.index(), r.call_fd());
  r.new_kick_fd(true);
  f.set_vring_fd(FrontendReq::SET_VRING_KICK, r.index(), r.kick_fd());
}

// What brings the device up before its guest is set up: restore() unless a
// case puts a message of its own next to the load, or has no load at all.
using BringUp = void (*)(Ctx&, QemuFrontend&);

// The guest of a device that `bring_up` made (a restored one by default),
// ready to start: rx buffers posted, an event ring without buffers, no ring
// handed over. The event ring is made after the bring-up: whether it uses
// EVENT_IDX depends on what the bring-up's last connection negotiated.
struct Restored {
  explicit Restored(Ctx& ctx, BringUp bring_up = restore)
      : ctx(ctx),
        q(ctx, restore_options()),
        acked(bring_up_and_ack(ctx, q, bring_up)),
        ev(ctx, vhu::has_bit(acked, vhu::feature::RING_EVENT_IDX)),
        g(q.guest()) {
    g.post_rx_buffers();
  }

  // Every ring handed over, the event ring included, as crosvm does. The
  // event ring is enabled before rx and tx, so that a back-end which decides
  // from the start sequence whether the front-end keeps the event queue
  // (README of the reference back-end) sees it handed over, whatever moment
  // it starts a ring at (SET_VRING_KICK or the first kick).
  void start_all_rings() {
    auto& f = features_and_memory();
    for (GuestQueue* r : {&g.rx(), &g.tx(), &ev.queue()}) {
      hand_over(f, *r);
    }
    if (f.acked_protocol)
      for (GuestQueue* r : {&ev.queue(), &g.rx(), &g.tx()}) f.set_vring_enable(r->index(), true);
  }

  // What comes before any ring: the guest's features, then the memory table.
  Frontend& features_and_memory() {
    auto& f = ctx.fe();
    f.set_ack_policy(Frontend::AckPolicy::Always);
    f.set_features(acked);
    f.set_mem_table(ctx.ram().regions(), ctx.ram().dup_fds());
    return f;
  }

  // Declared in the order they are made: the bring-up runs as `acked` is
  // initialized, after `q` and before `ev`.
  Ctx& ctx;
  QemuFrontend q;
  const uint64_t acked;  // the guest's features as the front-end will ack them
  EventRing ev;
  VsockGuest& g;

 private:
  static uint64_t bring_up_and_ack(Ctx& ctx, QemuFrontend& q, BringUp bring_up) {
    bring_up(ctx, q);
    return qemu_acked_features(ctx);
  }
};

// Waits for the event; fails if an rx used entry was visible while no event
// was. rx is read before the event ring, so rx > 0 with no event yet means
// the back-end wrote rx first.
void expect_event_first(Ctx& ctx, VsockGuest& g, EventRing& ev, uint16_t rx_used_before) {
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 2000));
  for (;;) {
    const uint16_t rx = g.rx().used_idx();
    const uint16_t e = ev.queue().used_idx();
    check(!(rx != rx_used_before && e == 0), "no rx packet before the TRANSPORT_RESET event",
          fmt::format("rx used idx {} while the event ring's is still 0", rx));
    if (e != 0) break;
    if (Clock::now() >= end) fail("a TRANSPORT_RESET event on the event ring after the load", "nothing within 2 s");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  auto got = ev.take();
  check(got && got->first == vs::kEventTransportReset, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (id 0)",
        got ? got->second : "no used entry");
}

// The guest's REQUEST, queued before the rings were handed over, is answered
// once the event is out of the way.
void expect_answer_after_event(Ctx& ctx, VsockGuest& g, const GuestConn& c) {
  bool ok = g.wait_until([&] { return c.established || c.reset; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, "an answer (RESPONSE or RST) to the guest's REQUEST after the event", "nothing");
}

// No REQUEST reaches the guest for `what` over the quiet window.
void expect_no_request(Ctx& ctx, VsockGuest& g, const std::string& what) {
  auto p = g.wait_rx([](const RxPacket& p) { return p.hdr.op == static_cast<uint16_t>(vs::Op::REQUEST); },
                     ctx.cfg().quiet_window_ms);
  check(!p, fmt::format("no host-initiated REQUEST {}", what), p ? vs::describe(p->hdr) : "");
}

// The host's CONNECT reaches the guest; accepted, the host reads "OK ".
void expect_host_connect(Ctx& ctx, VsockGuest& g, int host_fd, uint32_t guest_port, const std::string& when) {
  auto p = wait_op(ctx, g, vs::Op::REQUEST, guest_port);
  check(p.has_value(), fmt::format("a REQUEST to guest port {} for the host's CONNECT {}", guest_port, when), "nothing");
  g.accept(guest_port, p->hdr.src_port);
  const std::string ok = read_line(host_fd, std::min(ctx.remaining_ms(), 2000));
  check(ok.rfind("OK ", 0) == 0, "the host program to read \"OK <port>\" once the guest accepted",
        fmt::format("\"{}\"", ok));
}

void read_config(Ctx& ctx) {
  auto cfg = ctx.fe().get_config(0, vs::kConfigSize);
  auto cid = vs::decode_config(cfg);
  check(cid.ok() && *cid == ctx.cid(), fmt::format("GET_CONFIG guest_cid {}", ctx.cid()),
        cid.ok() ? fmt::format("guest_cid {}", *cid) : cid.message());
}

CONFORM_CASE(event_first,
             .id = "transport_reset.event_first",
             .requirements = {"VSOCK-RESET-EVENT", "VSOCK-RESET-NOTHING-BEFORE-EVENT"},
             .summary = "after a load, with the event ring handed over: TRANSPORT_RESET comes before any rx packet, "
                        "and waits for an event buffer rather than being lost",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  constexpr uint32_t kHostPort = 7100, kGuestPort = 7101;
  auto listener = ctx.host().listen(kHostPort);
  Restored r(ctx);
  auto& g = r.g;
  // The guest's REQUEST waits in tx when the rings arrive; its answer is rx traffic.
  auto& c = g.connect(kGuestPort, kHostPort);
  r.start_all_rings();
  // No event buffer yet: the event must wait for one, and rx with it.
  std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));
  check(g.rx().used_idx() == 0, "no rx packet while TRANSPORT_RESET waits for an event buffer",
        fmt::format("rx used idx {}", g.rx().used_idx()));
  r.ev.post(1);
  expect_event_first(ctx, g, r.ev, 0);
  // Afterwards the guest's own traffic flows.
  expect_answer_after_event(ctx, g, c);
}

CONFORM_CASE(host_connect_after_config_read,
             .id = "transport_reset.host_connect_after_config_read",
             .requirements = {"VSOCK-RESET-EVENT", "VSOCK-RESET-CONNECT-AFTER-CID"},
             .summary = "after the event, host CONNECTs wait until the driver re-reads guest_cid, then arrive",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  Restored r(ctx);
  auto& g = r.g;
  r.ev.post(2);
  HostSide host = ctx.host();
  auto early = host.connect(7201);  // before the rings: the connection storm on resume
  r.start_all_rings();
  expect_event_first(ctx, g, r.ev, 0);
  auto late = host.connect(7202);  // after the event, before the config read
  expect_no_request(ctx, g, "between TRANSPORT_RESET and the driver's config re-read");
  read_config(ctx);
  expect_host_connect(ctx, g, early.get(), 7201, "made before the restore completed");
  expect_host_connect(ctx, g, late.get(), 7202, "made before the config re-read");
}

CONFORM_CASE(early_config_read_ignored,
             .id = "transport_reset.early_config_read_ignored",
             .requirements = {"VSOCK-RESET-EVENT", "VSOCK-RESET-CONNECT-AFTER-CID"},
             .summary = "a config read before the event (a snapshot taken mid-probe) does not let host CONNECTs through",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  Restored r(ctx, [](Ctx& c, QemuFrontend& q) {
    restore(c, q);
    // The driver's initial read, interrupted by the snapshot, lands after the
    // load: it says nothing about the reset still to come (the seed's race).
    read_config(c);
  });
  auto& g = r.g;
  r.ev.post(1);
  auto s = ctx.host().connect(7301);
  r.start_all_rings();
  expect_event_first(ctx, g, r.ev, 0);
  expect_no_request(ctx, g, "after TRANSPORT_RESET when the only config read came before it");
  read_config(ctx);
  expect_host_connect(ctx, g, s.get(), 7301, "after the config re-read");
}

CONFORM_CASE(frontend_keeps_event_ring,
             .id = "transport_reset.frontend_keeps_event_ring",
             .requirements = {"VSOCK-RESET-FRONTEND-OWNS-EVENT", "QEMU-START-SEQUENCE"},
             .summary = "after a load, a front-end that hands over rings 0 and 1 only (QEMU) gets a working device "
                        "without any config read",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  constexpr uint32_t kHostPort = 7400, kGuestPort = 7401;
  auto listener = ctx.host().listen(kHostPort);
  QemuFrontend q(ctx, restore_options());
  restore(ctx, q);
  auto s = ctx.host().connect(7402);
  q.start();  // QEMU: rings 0 and 1; its guest's config reads never reach the back-end
  auto& g = q.guest();
  expect_host_connect(ctx, g, s.get(), 7402, "with the event queue kept by the front-end");
  auto host = open_stream(ctx, g, kGuestPort, kHostPort, listener.get());
  exchange(ctx, g, *g.conn(kGuestPort, kHostPort), host.get(), "after a restore without the event ring");
}

// crosvm activates its queues one after another, each set up and enabled
// before the next is touched, so rx and tx run a moment before the event ring
// arrives. A back-end that takes "rx and tx running without the event ring"
// to mean the front-end keeps that queue (QEMU) must not decide so at once.
CONFORM_CASE(queues_one_after_another,
             .id = "transport_reset.queues_one_after_another",
             .requirements = {"VSOCK-RESET-EVENT", "VSOCK-RESET-NOTHING-BEFORE-EVENT"},
             .summary = "after a load, rings 0, 1 and 2 each set up and enabled in turn (crosvm's order): "
                        "TRANSPORT_RESET still comes, before any rx packet",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  constexpr uint32_t kHostPort = 7600, kGuestPort = 7601;
  auto listener = ctx.host().listen(kHostPort);
  Restored r(ctx);
  auto& g = r.g;
  auto& c = g.connect(kGuestPort, kHostPort);
  auto& f = r.features_and_memory();
  r.ev.post(1);
  for (GuestQueue* ring : {&g.rx(), &g.tx(), &r.ev.queue()}) {
    if (ring == &r.ev.queue()) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // crosvm's next activation
    hand_over(f, *ring);
    if (f.acked_protocol) f.set_vring_enable(ring->index(), true);
  }
  expect_event_first(ctx, g, r.ev, 0);
  expect_answer_after_event(ctx, g, c);
}

CONFORM_CASE(device_reset_clears_pending,
             .id = "transport_reset.device_reset_clears_pending",
             .requirements = {"VSOCK-RESET-EVENT", "VU-RESET-DEVICE"},
             .summary = "RESET_DEVICE after a load drops the pending TRANSPORT_RESET: the rebooted driver gets no "
                        "event and a working device (firecracker #5891)",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE, pf::RESET_DEVICE},
             .timeout_ms = 10000) {
  Restored r(ctx, [](Ctx& c, QemuFrontend& q) {
    restore(c, q);
    // The restored guest reboots before its driver ever ran: a fresh device.
    c.fe().reset_device();
  });
  r.ev.post(2);
  r.start_all_rings();
  std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));
  check(r.ev.queue().used_idx() == 0, "no TRANSPORT_RESET left over from before the device reset",
        fmt::format("event ring used idx {}", r.ev.queue().used_idx()));
  auto s = ctx.host().connect(7601);
  expect_host_connect(ctx, r.g, s.get(), 7601, "after the device reset, with no config read");
}

CONFORM_CASE(none_without_load,
             .id = "transport_reset.none_without_load",
             .requirements = {"VSOCK-RESET-EVENT"},
             .summary = "a fresh start with the event ring handed over and no load sends no TRANSPORT_RESET",
             .device = "vsock",
             .timeout_ms = 10000) {
  // The same set-up as after a load, with a plain realize in its place.
  Restored r(ctx, [](Ctx&, QemuFrontend& q) { q.realize(); });
  auto& g = r.g;
  r.ev.post(4);
  r.start_all_rings();
  std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));
  auto no_event = [&] {
    check(r.ev.queue().used_idx() == 0, "no TRANSPORT_RESET on a device that was never loaded",
          fmt::format("event ring used idx {}", r.ev.queue().used_idx()));
  };
  no_event();
  auto s = ctx.host().connect(7501);
  expect_host_connect(ctx, g, s.get(), 7501, "on a fresh device");
  tx_consume(ctx, g, 2, "on a fresh device");
  no_event();
}

// The restored guest's other source of incoming connections: a sibling VM.
// Its REQUEST, sent between the event and the config re-read, is subject to
// the same rule as a host CONNECT. The reference back-end holds it and
// delivers it after the read (README, "Transport reset after a load", rule
// 2); a back-end that refuses it with RST instead must let a REQUEST sent
// after the read through.
CONFORM_CASE(sibling_after_config_read,
             .id = "transport_reset.sibling_after_config_read",
             .requirements = {"VSOCK-RESET-EVENT", "VSOCK-RESET-CONNECT-AFTER-CID", "VSOCK-SIBLING-ROUTE"},
             .summary = "after the event, a sibling VM's REQUEST reaches nothing until the driver re-reads guest_cid, "
                        "then it (or a retry, if it was refused) arrives and carries data both ways",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000,
             .siblings = true) {
  constexpr uint32_t kGuestPort = 7700, kSiblingPort = 7701;
  // The sibling runs as an ordinary QEMU guest the whole time.
  Ctx& sib = ctx.sibling();
  QemuFrontend qa = started(sib);
  auto& a = qa.guest();
  a.allow_peer(ctx.cid());

  Restored r(ctx);
  auto& g = r.g;
  g.allow_peer(sib.cid());
  r.ev.post(1);
  r.start_all_rings();
  expect_event_first(ctx, g, r.ev, 0);

  // Once the sibling's back-end has taken the REQUEST off its tx ring, the
  // packet is with the restored guest's device, which may pass it on at once
  // (so the rx ring is compared with its state before the REQUEST) or later
  // (so a quiet window follows).
  const uint16_t rx_before = g.rx().used_idx();
  const uint16_t taken = static_cast<uint16_t>(a.tx().dq().avail_idx() + 1);
  GuestConn* ca = &a.connect_to(ctx.cid(), kSiblingPort, kGuestPort);
  bool ok = a.wait_until([&] { return a.tx().used_idx() == taken; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, fmt::format("the back-end to take the REQUEST of CID {} off that VM's tx ring", sib.cid()),
        fmt::format("tx used idx {}, want {}", a.tx().used_idx(), taken));
  const std::string before_read = fmt::format(
      "towards the restored guest (CID {}) between TRANSPORT_RESET and its config re-read, while sibling CID {} sends "
      "it a REQUEST",
      ctx.cid(), sib.cid());
  check(g.rx().used_idx() == rx_before, "no rx packet " + before_read,
        fmt::format("rx used idx moved from {} to {} as the REQUEST was sent", rx_before, g.rx().used_idx()));
  expect_quiet(ctx, before_read);
  read_config(ctx);

  for (auto& p : a.poll_rx()) a.backlog().push_back(std::move(p));
  if (ca->reset) {
    ctx.note("the back-end refused the sibling's REQUEST sent before the config read (RST); a new one was sent after it");
    ca = &a.connect_to(ctx.cid(), kSiblingPort + 1, kGuestPort);
  }
  const uint32_t from_port = ca->local_port;
  auto req = wait_op(ctx, g, vs::Op::REQUEST, kGuestPort);
  check(req.has_value(), fmt::format("the REQUEST of CID {} port {} after the config re-read", sib.cid(), from_port),
        "nothing in 2 s");
  check(req->hdr.src_cid == sib.cid() && req->hdr.src_port == from_port,
        fmt::format("the REQUEST to come from {}:{}", sib.cid(), from_port), vs::describe(req->hdr));
  auto& cb = g.accept(*req);
  ok = a.wait_until([&] { return ca->established || ca->reset; }, std::min(ctx.remaining_ms(), 2000));
  check(ok && ca->established, fmt::format("the restored guest's RESPONSE to reach CID {}", sib.cid()),
        ca->reset ? "RST" : "nothing in 2 s");

  const std::string up = "sibling->restored;", down = "restored->sibling;";
  a.write(*ca, up);
  ok = g.wait_until([&] { return cb.received.size() >= up.size(); }, std::min(ctx.remaining_ms(), 2000));
  check(ok && cb.received == up, fmt::format("the restored guest to receive \"{}\" exactly once", up),
        fmt::format("\"{}\"", cb.received));
  g.write(cb, down);
  ok = a.wait_until([&] { return ca->received.size() >= down.size(); }, std::min(ctx.remaining_ms(), 2000));
  check(ok && ca->received == down, fmt::format("the sibling to receive \"{}\" exactly once", down),
        fmt::format("\"{}\"", ca->received));
}

}  // namespace
}  // namespace conform
