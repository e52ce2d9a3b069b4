// Bugs real back-ends shipped (../shared/INTEROP.md, "Bugs real back-ends and
// front-ends shipped"): a back-end that ships one of them fails the suite.
// Where another family already reproduces a bug, this file adds nothing.
//
//  1 GET_VRING_BASE returned 0 / rings reset, not stopped
//      -> vrings.stop_returns_index, suspend.vring_base_exact, lifecycle.stop_cont
//  2 rings disabled without PROTOCOL_FEATURES     -> vrings.enabled_without_protocol_features
//  3 kick before SET_VRING_ENABLE(1) lost           -> lifecycle.kick_before_enable
//  4 need_reply only after GET_PROTOCOL_FEATURES   -> reconnect.need_reply_without_get_protocol_features
//  5 SET_DEVICE_STATE_FD in an unexpected order     -> device_state.migrate_qemu10,
//                                                      device_state.migrate_load_after_setup
//  6 CHECK_DEVICE_STATE without REPLY_ACK           -> device_state.check_without_transfer
//  7 SET_VRING_ENABLE(0) before GET_VRING_BASE      -> lifecycle.boot, lifecycle.stop_cont (QEMU's stop)
//  8 disabled / not-ready ring under host traffic   -> interop.host_traffic_unready_rings
//  9 surplus fds leaked (DPDK CVE-2022-0669)        -> interop.surplus_fds
// 10 TRANSPORT_RESET lost without an event buffer   -> transport_reset.event_first
// 11 connection storm before the reset is handled   -> transport_reset.host_connect_after_config_read;
//    a pending-event flag surviving a device reset   -> transport_reset.device_reset_clears_pending
// 12 no re-kick after resume                        -> vrings.start_on_kick (newest text),
//                                                      suspend.resume_in_order
// 13 CONNECT line without newline, garbage, huge   -> interop.hybrid_connect_line
// 14 RST answered with RST                          -> vsock.no_rst_for_rst
// 15 credit and op order: CREDIT_REQUEST answered, -> vsock.credit_request_answered,
//    half-close, long transfers, small buf_alloc      vsock.shutdown_guest_to_host, vsock.shutdown_host_to_guest,
//                                                      vsock.seqpacket_shutdown_host_to_guest,
//                                                      vsock.credit_update_unasked, vsock.credit_respected;
//    nothing before the guest's RESPONSE            -> interop.nothing_before_response
// 16 fds lost in a pipelined burst                  -> interop.pipelined_burst
// 17 SET_VRING_CALL while suspended notifies        -> suspend.new_call_fd_silent
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <thread>

#include "robustness_util.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

// ---- 9: surplus fds ----

CONFORM_CASE(surplus_fds,
             .id = "interop.surplus_fds",
             .requirements = {"VU-FD-MESSAGES", "VU-MEM-TABLE"},
             .summary = "one surplus fd on every message of a session (also on those that take fds): each is closed "
                        "at once, the messages still work or the connection is closed (DPDK CVE-2022-0669)") {
  auto& fe = ctx.fe();
  std::vector<vhu::UniqueFd> read_ends;
  std::vector<std::string> carried_by;
  // The surplus fd is a pipe's only write end: once the back-end closes it the
  // read end sees EOF, with no need to look inside the back-end's process.
  auto extra = [&](Message m) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) fail("a pipe", std::strerror(errno));
    read_ends.emplace_back(p[0]);
    carried_by.push_back(vhu::request_name(vhu::Plane::Frontend, m.hdr.request));
    m.fds.emplace_back(p[1]);
    return m;
  };
  // Refusing a message for its surplus fd by closing the connection is allowed
  // (VU-ERROR-CLOSE): the session ends there, and only the leak check remains.
  struct ClosedOn {
    std::string what;
  };
  auto roundtrip = [&](Message m, bool own_reply) {
    if (!own_reply && fe.reply_ack()) m.hdr.flags |= vhu::kFlagNeedReply;
    const std::string what = vhu::request_name(vhu::Plane::Frontend, m.hdr.request) + " with a surplus fd";
    auto o = fe.try_request(extra(std::move(m)));
    if (o.kind == Outcome::Closed) throw ClosedOn{what};
    check(o.kind == Outcome::Reply, what + " answered (the fd closed, the message handled) or the connection closed",
          o.text);
    if (!own_reply && fe.reply_ack()) check(o.u64 == 0, "ack 0 for " + what, o.text);
    return o;
  };
  try {
    auto of = roundtrip(Message::empty(req(FrontendReq::GET_FEATURES)), true);
    fe.offered_features = of.u64;
    const bool has_pf = vhu::has_bit(of.u64, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES);
    if (has_pf) {
      auto op = roundtrip(Message::empty(req(FrontendReq::GET_PROTOCOL_FEATURES)), true);
      const uint64_t p = op.u64 & vhu::protocol_features_in(ctx.spec());
      if (!fe.try_send(extra(Message::request_with(req(FrontendReq::SET_PROTOCOL_FEATURES), p))))
        throw ClosedOn{"SET_PROTOCOL_FEATURES with a surplus fd"};
      fe.acked_protocol = p;
    }
    roundtrip(Message::empty(req(FrontendReq::SET_OWNER)), false);
    const uint64_t feats = of.u64 & (vhu::bit(vhu::feature::VERSION_1) |
                                     vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES));
    roundtrip(Message::request_with(req(FrontendReq::SET_FEATURES), feats), false);
    fe.acked_features = feats;
    {
      Message m = set_mem_table_message(ctx.ram().regions());
      m.fds = ctx.ram().dup_fds();
      roundtrip(std::move(m), false);
    }
    GuestQueue q(ctx.ram(), 0, 64, false, 1);
    roundtrip(Message::request_with(req(FrontendReq::SET_VRING_NUM), vhu::VringState{0, 64}), false);
    roundtrip(Message::request_with(req(FrontendReq::SET_VRING_BASE), vhu::VringState{0, 0}), false);
    roundtrip(Message::request_with(req(FrontendReq::SET_VRING_ADDR), q.addr()), false);
    for (auto r : {FrontendReq::SET_VRING_CALL, FrontendReq::SET_VRING_ERR, FrontendReq::SET_VRING_KICK}) {
      Message m = Message::request_with(req(r), uint64_t{0});
      m.fds.push_back(make_eventfd());
      roundtrip(std::move(m), false);
    }
    if (has_pf) roundtrip(Message::request_with(req(FrontendReq::SET_VRING_ENABLE), vhu::VringState{0, 1}), false);
    roundtrip(Message::request_with(req(FrontendReq::GET_VRING_BASE), vhu::VringState{0, 0}), true);
  } catch (const ClosedOn& c) {
    check(!ctx.backend().crashed(), "the back-end to survive " + c.what, ctx.backend().status_text());
    ctx.note("the back-end closed the connection on " + c.what);
  }
  std::string open;
  const auto end = Clock::now() + std::chrono::milliseconds(500);
  for (size_t i = 0; i < read_ends.size(); ++i) {
    pollfd p{read_ends[i].get(), POLLIN, 0};
    const int left = static_cast<int>(
        std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count()));
    if (::poll(&p, 1, left) != 1 || !(p.revents & POLLHUP)) open += (open.empty() ? "" : ", ") + carried_by[i];
  }
  check(open.empty(), "every surplus fd closed by the back-end within 500 ms",
        "still open, the one that came with: " + open);
}

// ---- 16: pipelined burst ----

CONFORM_CASE(pipelined_burst,
             .id = "interop.pipelined_burst",
             .requirements = {"VU-MSG-FRAMING", "VU-MEM-TABLE", "VU-FD-MESSAGES"},
             .summary = "SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES and SET_MEM_TABLE (fds on its first byte) "
                        "sent back to back: the table keeps its fds and the rings work",
             .device = "vsock") {
  auto& fe = ctx.fe();
  const uint64_t feats = fe.get_features();
  if (!vhu::has_bit(feats, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES))
    skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  uint64_t p = fe.get_protocol_features() & vhu::protocol_features_in(ctx.spec());
  p &= ~vhu::bit(pf::CONFIGURE_MEM_SLOTS);  // QemuFrontend then uses SET_MEM_TABLE on start
  // One sendmsg per message, fds with their own message, no wait in between:
  // the back-end finds them all in its socket at once.
  fe.send(Message::request_with(req(FrontendReq::SET_PROTOCOL_FEATURES), p));
  fe.acked_protocol = p;
  fe.send(Message::empty(req(FrontendReq::SET_OWNER)));
  const uint64_t acked =
      feats & (vhu::bit(vhu::feature::VERSION_1) | vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES));
  fe.send(Message::request_with(req(FrontendReq::SET_FEATURES), acked));
  fe.acked_features = acked;
  {
    Message m = set_mem_table_message(ctx.ram().regions());
    if (fe.reply_ack()) m.hdr.flags |= vhu::kFlagNeedReply;
    m.fds = ctx.ram().dup_fds();
    fe.send(std::move(m));
    if (fe.reply_ack()) {
      Message r = fe.expect_reply(req(FrontendReq::SET_MEM_TABLE), "the REPLY_ACK of the pipelined SET_MEM_TABLE");
      auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
      check(v.ok() && *v == 0, "ack 0: the pipelined SET_MEM_TABLE arrived with its two fds",
            v.ok() ? fmt::format("ack {:#x}", *v) : v.message());
    }
  }
  ctx.check_needs();
  // The rest of a QEMU start, without re-sending the table: the rings must
  // work through the one that came in the burst.
  auto& g = ctx.vsock(false);
  for (GuestQueue* qq : {&g.rx(), &g.tx()}) {
    fe.set_vring_fd(FrontendReq::SET_VRING_CALL, qq->index(), qq->call_fd());
    fe.set_vring_num(qq->index(), qq->size());
    fe.set_vring_base(qq->index(), 0);
    fe.set_vring_addr(qq->addr());
    qq->new_kick_fd(true);
    fe.set_vring_fd(FrontendReq::SET_VRING_KICK, qq->index(), qq->kick_fd());
    fe.set_vring_enable(qq->index(), true);
  }
  tx_consume(ctx, g, 2, "through the memory table sent in a pipelined burst");
}

// ---- 8: host traffic for rings that are not ready ----

CONFORM_CASE(host_traffic_unready_rings,
             .id = "interop.host_traffic_unready_rings",
             .requirements = {"VU-RING-INITIAL-STATE", "VU-RING-DISABLED", "VU-SUSPENDED-STILL-REPLIES"},
             .summary = "host CONNECTs before the rings exist and while rx is disabled: every front-end message "
                        "is still answered at once; the connection reaches the guest once rx runs (vhost-device #827)",
             .device = "vsock") {
  QemuOptions o;
  o.enable_rings = false;
  QemuFrontend q(ctx, o);
  q.realize();
  auto& fe = ctx.fe();
  fe.set_reply_timeout_ms(1000);
  // Before SET_VRING_ADDR of any ring: the host side is already listening.
  auto early = ctx.host().connect(61);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ctx.expect_alive("while a host CONNECT waits for rings that do not exist yet");
  if (!fe.acked_protocol) {
    q.start();
  } else {
    q.start();  // started, not enabled
    fe.set_vring_enable(vs::kTxQueue, true);
    auto disabled = ctx.host().connect(62);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ctx.expect_alive("while host CONNECTs wait for a disabled rx ring");
    // The snapshot of a stopped device (rust-vmm/vhost #284): both bases answered.
    const uint32_t rx_base = fe.get_vring_base(vs::kRxQueue);
    const uint32_t tx_base = fe.get_vring_base(vs::kTxQueue);
    auto& g = q.guest();
    for (GuestQueue* qq : {&g.rx(), &g.tx()}) {
      fe.set_vring_num(qq->index(), qq->size());
      fe.set_vring_base(qq->index(), qq->index() == vs::kTxQueue ? tx_base : rx_base);
      fe.set_vring_addr(qq->addr());
      qq->new_kick_fd(true);
      fe.set_vring_fd(FrontendReq::SET_VRING_KICK, qq->index(), qq->kick_fd());
      fe.set_vring_enable(qq->index(), true);
    }
  }
  // A back-end may have refused the early CONNECTs; a new one must get through now.
  auto& g = q.guest();
  auto now = ctx.host().connect(63);
  auto p = g.wait_rx(
      [](const RxPacket& p) { return p.hdr.op == static_cast<uint16_t>(vs::Op::REQUEST) && p.hdr.dst_port == 63; },
      std::min(ctx.remaining_ms(), 2000));
  check(p.has_value(), "a REQUEST on rx for a host CONNECT once the rings run", "nothing");
  check(!ctx.backend().crashed(), "the back-end to survive", ctx.backend().status_text());
}

// ---- 13: the hybrid-vsock CONNECT line ----

vhu::UniqueFd raw_host(Ctx& ctx) {
  auto s = vhu::connect_unix(ctx.host().uds());
  if (!s) fail("the back-end to listen on its hybrid-vsock socket " + ctx.host().uds(), s.message());
  return std::move(*s);
}

CONFORM_CASE(hybrid_connect_line,
             .id = "interop.hybrid_connect_line",
             .requirements = {"VU-REPLY-REQUIRED"},
             .summary = "host peers that send half a CONNECT line, close mid-line, send garbage or a 64 KiB line, "
                        "or write byte by byte: the back-end keeps answering and the good lines connect "
                        "(cloud-hypervisor #6621, #6798)",
             .device = "vsock",
             .timeout_ms = 8000) {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto half = raw_host(ctx);
  check(write_all(half.get(), "CONNECT 5"), "the back-end to take half a CONNECT line", "write failed");
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ctx.fe().set_reply_timeout_ms(1000);
  ctx.expect_alive("while a host peer has sent half a CONNECT line and waits");
  {
    auto cut = raw_host(ctx);
    write_all(cut.get(), "CONN");
  }  // closed mid-line
  {
    auto junk = raw_host(ctx);
    write_all(junk.get(), "HELLO THERE\n");
  }
  {
    auto huge = raw_host(ctx);
    std::string big(64 * 1024, 'A');
    // Whatever the socket takes: the back-end may close it once the line is too long.
    (void)::send(huge.get(), big.data(), big.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  auto slow = raw_host(ctx);
  for (char c : std::string("CONNECT 57\n")) {
    (void)::send(slow.get(), &c, 1, MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  check(write_all(half.get(), "6\n"), "the back-end to take the rest of the half line", "write failed");
  for (uint32_t port : {56u, 57u}) {
    auto p = wait_op(ctx, g, vs::Op::REQUEST, port);
    check(p.has_value(), fmt::format("a REQUEST to guest port {} for a CONNECT line that came in pieces", port),
          "nothing");
    g.accept(port, p->hdr.src_port);
    const std::string ok = read_line(port == 56 ? half.get() : slow.get(), std::min(ctx.remaining_ms(), 2000));
    check(ok.rfind("OK ", 0) == 0, fmt::format("\"OK <port>\" for the CONNECT {} line", port), fmt::format("\"{}\"", ok));
  }
  ctx.expect_alive("after the odd host peers");
}

// ---- 15: nothing for a host-initiated flow before the guest's RESPONSE ----

CONFORM_CASE(nothing_before_response,
             .id = "interop.nothing_before_response",
             .requirements = {"VSOCK-ESTABLISHED-ON-RESPONSE"},
             .summary = "a host peer writes right after CONNECT: until the guest answers the REQUEST, nothing else "
                        "for that flow reaches the guest; then the OK line and the data (libkrun #267, "
                        "vhost-device #963)",
             .device = "vsock") {
  constexpr uint32_t kPort = 70;
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto host = ctx.host().connect(kPort);
  const std::string early = "written before the guest answered;";
  check(write_all(host.get(), early), "the back-end to take the host's first bytes", "write failed");
  auto r = wait_op(ctx, g, vs::Op::REQUEST, kPort);
  check(r.has_value(), fmt::format("a REQUEST to guest port {} for the host's CONNECT", kPort), "nothing");
  const uint32_t peer = r->hdr.src_port;
  // A Linux guest answers any other packet on a connecting socket with EPROTO.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto flow = [&](const RxPacket& p) { return p.hdr.dst_port == kPort && p.hdr.src_port == peer; };
  for (const auto& p : g.poll_rx())
    check(!flow(p), "nothing but the REQUEST for the flow before the guest's RESPONSE",
          fmt::format("a {} packet: {}", vs::op_name(p.hdr.op), vs::describe(p.hdr)));
  for (const auto& p : g.backlog())
    check(!flow(p), "nothing but the REQUEST for the flow before the guest's RESPONSE",
          fmt::format("a {} packet: {}", vs::op_name(p.hdr.op), vs::describe(p.hdr)));
  g.accept(kPort, peer);
  const std::string ok = read_line(host.get(), std::min(ctx.remaining_ms(), 2000));
  check(ok.rfind("OK ", 0) == 0, "\"OK <port>\" once the guest accepted", fmt::format("\"{}\"", ok));
  GuestConn* c = g.conn(kPort, peer);
  bool got = g.wait_until([&] { return c->received.size() >= early.size(); }, std::min(ctx.remaining_ms(), 2000));
  check(got && c->received == early, fmt::format("the guest to receive \"{}\" once established", early),
        fmt::format("\"{}\"", c->received));
}

}  // namespace
}  // namespace conform
