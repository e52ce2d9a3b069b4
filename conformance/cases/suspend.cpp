// Suspended device state (vhost-user "Ring states" / "Suspended device
// state"; seed 002): once GET_VRING_BASE has stopped every started ring, the
// back-end touches nothing the guest can see and speaks only when spoken to,
// however much the host side pushes meanwhile; after the restart nothing
// either side queued is lost or duplicated.
//
// The rings are stopped with GET_VRING_BASE alone, without QEMU's
// SET_VRING_ENABLE(0) first: stopping is what suspends a device, and a
// back-end that only honours the disable would hide behind it (lifecycle.*
// covers QEMU's exact order).
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

constexpr uint32_t kHostPort = 1300;    // the guest's stream goes to <uds>_1300
constexpr uint32_t kGuestPort = 4300;
constexpr uint32_t kListenPort = 5300;  // guest ports the host CONNECTs to

// A running device (QEMU 7.2's start) with one guest-initiated stream open,
// data exchanged on it, and with Stage::Suspended every started ring stopped.
struct Running {
  enum class Stage { Started, Suspended };
  Running(Ctx& ctx, Stage stage);
  QemuFrontend q;
  vhu::UniqueFd listener, host;
  GuestConn* conn = nullptr;
  // What the guest could see at the moment of the suspend: a watch window
  // alone would miss whatever the back-end did before it opened.
  std::array<uint16_t, 2> used_at_suspend{};
  uint64_t hash_at_suspend = 0;
};

void start(Ctx& ctx, Running& r) {
  r.listener = ctx.host().listen(kHostPort);
  r.q.realize();
  r.q.start();
  auto& g = r.q.guest();
  r.host = open_stream(ctx, g, kGuestPort, kHostPort, r.listener.get());
  r.conn = g.conn(kGuestPort, kHostPort);
  exchange(ctx, g, *r.conn, r.host.get(), "before the suspend");
}

// GET_VRING_BASE on rx and tx, the rings QEMU hands over. The tx ring is
// drained first so the bases are known; the bases go where q.start() (a
// `cont`) sends them back from.
void suspend(Ctx& ctx, Running& r) {
  auto& g = r.q.guest();
  const bool drained = g.wait_until([&] { return g.tx().used_idx() == g.tx().dq().avail_idx(); },
                                    std::min(ctx.remaining_ms(), 2000));
  check(drained, fmt::format("the back-end to use every tx buffer before the stop (used idx {})", g.tx().dq().avail_idx()),
        fmt::format("used idx {}", g.tx().used_idx()));
  g.reclaim_tx();
  for (GuestQueue* q : {&g.rx(), &g.tx()}) r.q.bases[q->index()] = ctx.fe().get_vring_base(q->index());
  ctx.log().record_text(Dir::ToBackend, "(every started ring stopped: the device is suspended)");
  for (GuestQueue* q : {&g.rx(), &g.tx()}) {
    q->take_calls();
    r.used_at_suspend[q->index()] = q->used_idx();
  }
  r.hash_at_suspend = ctx.ram().hash();
}

Running::Running(Ctx& ctx, Stage stage) : q(ctx) {
  start(ctx, *this);
  if (stage == Stage::Suspended) suspend(ctx, *this);
}

// Nothing since the suspend (no call, no used entry, and no guest-memory byte
// changed unless the guest wrote some itself), then nothing over a window.
// A round trip first: a back-end that answers it has woken up for what came
// before (host data, a kick), so one that acts on it wrongly does so before
// the window ends even on a loaded machine, rather than just after.
void expect_suspended(Ctx& ctx, Running& r, const std::string& while_what, bool guest_wrote = false) {
  ctx.expect_alive(while_what);
  auto& g = r.q.guest();
  for (GuestQueue* q : {&g.rx(), &g.tx()}) {
    const uint64_t n = q->take_calls();
    check(n == 0, fmt::format("no notification since the suspend ({})", while_what),
          fmt::format("the call eventfd of ring {} signalled ({}x)", q->index(), n));
    check(q->used_idx() == r.used_at_suspend[q->index()],
          fmt::format("no used entry since the suspend ({})", while_what),
          fmt::format("used idx of ring {} moved from {} to {}", q->index(), r.used_at_suspend[q->index()],
                      q->used_idx()));
  }
  if (!guest_wrote)
    check(ctx.ram().hash() == r.hash_at_suspend, fmt::format("no guest-memory write since the suspend ({})", while_what),
          "guest memory changed");
  expect_quiet(ctx, while_what);
}

void host_write(int fd, const std::string& data) {
  check(write_all(fd, data), "the host socket to take data", "write failed (the back-end closed the host connection)");
}

CONFORM_CASE(quiet_under_host_traffic,
             .id = "suspend.quiet_under_host_traffic",
             .requirements = {"VU-SUSPENDED", "VU-RING-STOPPED-NO-PROCESS", "VU-GET-VRING-BASE-STOPS",
                              "VU-MIGRATION-NO-UPDATE"},
             .summary = "every ring stopped by GET_VRING_BASE: host data and host CONNECTs cause no used entry, no "
                        "guest-memory write, no call and no message",
             .device = "vsock",
             .timeout_ms = 10000) {
  Running r(ctx, Running::Stage::Suspended);
  host_write(r.host.get(), "host data while suspended #1;");
  auto c1 = ctx.host().connect(kListenPort);
  expect_suspended(ctx, r, "while suspended, with host data and a host CONNECT waiting");
  host_write(r.host.get(), std::string(8192, 's'));
  auto c2 = ctx.host().connect(kListenPort + 1);
  expect_suspended(ctx, r, "while suspended, after more host data and a second host CONNECT");
}

CONFORM_CASE(answers_frontend,
             .id = "suspend.answers_frontend",
             .requirements = {"VU-SUSPENDED-REPLIES", "VU-SUSPENDED", "VU-REPLY-ACK", "VU-GET-STATUS",
                              "VU-GET-CONFIG-SIZE"},
             .summary = "suspended, with host data waiting: GET_FEATURES, GET_PROTOCOL_FEATURES, GET_CONFIG, GET_STATUS "
                        "and a need_reply SET_VRING_CALL are all answered, and nothing else happens",
             .device = "vsock",
             .timeout_ms = 10000) {
  Running r(ctx, Running::Stage::Suspended);
  host_write(r.host.get(), "host data while suspended;");
  auto& fe = ctx.fe();
  const uint64_t offered = fe.offered_features.value_or(0);
  const uint64_t f = fe.get_features();
  const bool vsock = ctx.cfg().target.device == "vsock";
  check(f == offered,
        fmt::format("GET_FEATURES while suspended: the features offered before, {}", vf_text(offered, vsock)),
        vf_text(f, vsock));
  if (fe.offered_protocol) {
    const uint64_t before = *fe.offered_protocol;
    const uint64_t p = fe.get_protocol_features();
    check(p == before, fmt::format("GET_PROTOCOL_FEATURES while suspended: {}", pf_text(before)), pf_text(p));
  }
  if (fe.protocol_negotiated(pf::CONFIG)) {
    auto cfg = vs::decode_config(fe.get_config(0, vs::kConfigSize));
    check(cfg.ok() && *cfg == ctx.cid(), fmt::format("GET_CONFIG while suspended: guest_cid {}", ctx.cid()),
          cfg.ok() ? fmt::format("guest_cid {}", *cfg) : cfg.message());
  }
  if (fe.protocol_negotiated(pf::STATUS)) {
    const uint64_t st = fe.get_status();
    check(st == vhu::status::FEATURES_OK, "GET_STATUS while suspended: FEATURES_OK (0x8), as set at start (a stop is no reset)",
          fmt::format("{:#x}", st));
  }
  if (fe.reply_ack()) {
    // QEMU ends every stop with SET_VRING_CALL; here it asks for an ack.
    auto& rx = r.q.guest().rx();
    rx.new_call_fd();
    fe.set_ack_policy(Frontend::AckPolicy::Always);
    fe.set_vring_fd(FrontendReq::SET_VRING_CALL, rx.index(), rx.call_fd());
    fe.set_ack_policy(Frontend::AckPolicy::Qemu72);
  } else {
    ctx.note("REPLY_ACK not negotiated: need_reply was not probed while suspended");
  }
  expect_suspended(ctx, r, "while suspended, after answering the front-end");
}

CONFORM_CASE(new_call_fd_silent,
             .id = "suspend.new_call_fd_silent",
             .requirements = {"VU-SUSPENDED", "QEMU-STOP-SEQUENCE"},
             .summary = "SET_VRING_CALL while suspended (QEMU's last stop message) signals neither the new call fd "
                        "nor anything else (INTEROP bug 17)",
             .device = "vsock",
             .timeout_ms = 10000) {
  Running r(ctx, Running::Stage::Suspended);
  auto& g = r.q.guest();
  for (GuestQueue* q : {&g.tx(), &g.rx()}) {
    q->new_call_fd();
    ctx.fe().set_vring_fd(FrontendReq::SET_VRING_CALL, q->index(), q->call_fd());
  }
  host_write(r.host.get(), "host data after the new call fds;");
  expect_suspended(ctx, r, "while suspended, after SET_VRING_CALL replaced both call fds");
}

// A kick on the kick fd the back-end held before GET_VRING_BASE. Neither text
// lets it restart the ring: GET_VRING_BASE stops it, and the restart is the
// front-end's SET_VRING_KICK (newest: "A stopped ring enters the started state
// again with VHOST_USER_SET_VRING_KICK"; upstream: the kick on the descriptor
// that message hands over). A back-end that kept watching the old fd and
// restarted on it would write used entries while suspended, and then redo
// them after the real restart from the returned base.
CONFORM_CASE(kick_while_stopped,
             .id = "suspend.kick_while_stopped",
             .requirements = {"VU-RING-STOPPED-NO-PROCESS", "VU-SUSPENDED", "VU-SET-VRING-BASE",
                              "VU-GET-VRING-BASE-INDEX"},
             .summary = "tx buffers and kicks while stopped, and the restart's NUM/BASE/ADDR: the ring is untouched "
                        "until SET_VRING_KICK, then used exactly once",
             .device = "vsock",
             .timeout_ms = 10000) {
  Running r(ctx, Running::Stage::Suspended);
  auto& g = r.q.guest();
  auto& fe = ctx.fe();
  auto& tx = g.tx();
  const uint16_t base = static_cast<uint16_t>(r.q.bases[vs::kTxQueue]);
  for (uint32_t i = 0; i < 3; ++i) g.send(g.hdr(vs::Op::RST, 43000 + i, 49999), {}, false);
  tx.kick();
  expect_suspended(ctx, r, "after three tx buffers and a kick while every ring is stopped", true);
  fe.set_vring_num(tx.index(), tx.size());
  fe.set_vring_base(tx.index(), base);
  fe.set_vring_addr(tx.addr());
  tx.kick();
  expect_suspended(ctx, r, "after SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR and another kick, before SET_VRING_KICK",
                   true);
  tx.new_kick_fd(true);
  fe.set_vring_fd(FrontendReq::SET_VRING_KICK, tx.index(), tx.kick_fd());
  const uint16_t want = static_cast<uint16_t>(base + 3);
  const bool ok = g.wait_until([&] { return tx.used_idx() == want; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, fmt::format("the three buffers used after SET_VRING_KICK (tx used idx {})", want),
        fmt::format("used idx {}", tx.used_idx()));
  const uint32_t again = fe.get_vring_base(tx.index());
  check(again == want, fmt::format("GET_VRING_BASE of tx = {} (each buffer consumed once)", want),
        std::to_string(again));
  expect_no_anomalies(g, "no used entry for a buffer not in flight");
}

CONFORM_CASE(resume_in_order,
             .id = "suspend.resume_in_order",
             .requirements = {"VU-SUSPENDED", "VU-SET-VRING-BASE", "VU-MIGRATION-NO-UPDATE", "VSOCK-STREAM-ORDERED"},
             .summary = "data both ways and a host CONNECT queued while suspended arrive after the restart in order, "
                        "once, and the stream goes on",
             .device = "vsock",
             .timeout_ms = 15000) {
  Running r(ctx, Running::Stage::Suspended);
  auto& g = r.q.guest();
  GuestConn& c = *r.conn;
  // The guest driver does not know the device is stopped: it queues and kicks.
  const std::string up = "guest data queued while suspended;";
  g.write(c, up);
  std::string down = "suspended chunk 1;";
  host_write(r.host.get(), down);
  auto hc = ctx.host().connect(kListenPort);
  const std::string more = "suspended chunk 2;";
  host_write(r.host.get(), more);
  down += more;
  std::string bulk(20000, '\0');
  for (size_t i = 0; i < bulk.size(); ++i) bulk[i] = static_cast<char>('a' + (i * 7) % 26);
  host_write(r.host.get(), bulk);
  down += bulk;
  expect_suspended(ctx, r, "while suspended, with data both ways and a CONNECT waiting", true);
  const size_t before = c.received.size();
  r.q.start();  // QEMU's cont: the returned bases, the same ring addresses

  const std::string got = read_n(r.host.get(), up.size(), std::min(ctx.remaining_ms(), 2000));
  check(got == up, fmt::format("the host to read \"{}\" exactly once after the restart", up), fmt::format("\"{}\"", got));
  const bool ok = g.wait_until([&] { return c.received.size() >= before + down.size(); },
                               std::min(ctx.remaining_ms(), 3000));
  const std::string in = c.received.substr(before);
  check(ok && in == down,
        fmt::format("the guest to receive the {} bytes the host wrote while suspended, in order, once", down.size()),
        in.size() == down.size() ? "the same number of bytes, in another order or altered"
                                 : fmt::format("{} bytes{}", in.size(),
                                               in.size() > down.size() ? " (some twice)" : " (some lost)"));
  auto req = wait_op(ctx, g, vs::Op::REQUEST, kListenPort);
  check(req.has_value(), fmt::format("a REQUEST to guest port {} for the host CONNECT made while suspended", kListenPort),
        "nothing");
  g.accept(kListenPort, req->hdr.src_port);
  const std::string okline = read_line(hc.get(), std::min(ctx.remaining_ms(), 2000));
  check(okline.rfind("OK ", 0) == 0, "the host to read \"OK <port>\" once the guest accepted",
        fmt::format("\"{}\"", okline));
  exchange(ctx, g, c, r.host.get(), "after the resume");
  for (const auto& p : g.backlog())
    check(p.hdr.op != static_cast<uint16_t>(vs::Op::REQUEST) || p.hdr.dst_port != kListenPort,
          "one REQUEST for the one CONNECT", "a second REQUEST: " + vs::describe(p.hdr));
  expect_no_anomalies(g, "no stray or malformed rx packets");
}

// Upstream has no drain rule: a buffer the back-end took but had not used when
// GET_VRING_BASE came may still be in flight, as long as the base counts it.
// The newest text adds "By default, the back-end must complete all inflight
// I/O requests for the specified vring before stopping it".
CONFORM_CASE(vring_base_exact,
             .id = "suspend.vring_base_exact",
             .requirements = {"VU-GET-VRING-BASE-INDEX", "VU-GET-VRING-BASE-DRAIN", "VU-SET-VRING-BASE"},
             .summary = "GET_VRING_BASE on both rings reports exactly the buffers consumed, across a suspend, and with "
                        "buffers kicked just before the stop",
             .device = "vsock",
             .timeout_ms = 15000,
             .spec_dependent = true) {
  Running r(ctx, Running::Stage::Started);
  auto& g = r.q.guest();
  auto& tx = g.tx();
  tx_consume(ctx, g, 5, "before the stop");
  suspend(ctx, r);
  const uint16_t avail = tx.dq().avail_idx();
  check(r.q.bases[vs::kTxQueue] == avail,
        fmt::format("GET_VRING_BASE of tx = {} (every buffer queued, all of them used)", avail),
        std::to_string(r.q.bases[vs::kTxQueue]));
  check(r.q.bases[vs::kRxQueue] == g.rx().used_idx(),
        fmt::format("GET_VRING_BASE of rx = {} (the rx buffers the back-end filled)", g.rx().used_idx()),
        std::to_string(r.q.bases[vs::kRxQueue]));
  for (uint32_t i = 0; i < 3; ++i) g.send(g.hdr(vs::Op::RST, 44000 + i, 49999), {}, false);
  r.q.start();
  const uint16_t want = static_cast<uint16_t>(avail + 3);
  bool ok = g.wait_until([&] { return tx.used_idx() == want; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, fmt::format("the 3 buffers queued while suspended used after the restart (tx used idx {})", want),
        fmt::format("used idx {}", tx.used_idx()));
  // Four more, kicked, and the stop right behind them.
  for (uint32_t i = 0; i < 4; ++i) g.send(g.hdr(vs::Op::RST, 45000 + i, 49999), {}, true);
  const uint16_t end = tx.dq().avail_idx();
  const uint32_t b = ctx.fe().get_vring_base(tx.index());
  const uint16_t used = tx.used_idx();
  if (ctx.newest()) {
    check(b == used, "every buffer the back-end took used before GET_VRING_BASE replied (newest: drained)",
          fmt::format("base {} but used idx {}", b, used));
  }
  check(b >= want && b <= end && used <= b,
        fmt::format("GET_VRING_BASE of tx between {} and {}, and not behind the used idx", want, end),
        fmt::format("base {}, used idx {}", b, used));
  r.q.bases[vs::kTxQueue] = b;
  r.q.bases[vs::kRxQueue] = ctx.fe().get_vring_base(vs::kRxQueue);
  r.q.start();
  ok = g.wait_until([&] { return tx.used_idx() == end; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, fmt::format("every tx buffer used once after the second restart (used idx {})", end),
        fmt::format("used idx {}", tx.used_idx()));
  const uint32_t last = ctx.fe().get_vring_base(tx.index());
  check(last == end, fmt::format("GET_VRING_BASE of tx = {} at the end (none consumed twice)", end),
        std::to_string(last));
  expect_no_anomalies(g, "no used entry for a buffer not in flight");
}

}  // namespace
}  // namespace conform
