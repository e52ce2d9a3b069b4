// The virtio-vsock device (virtio 1.3, 5.10) as the guest and the host see
// it through a vhost-user back-end: the config, byte streams both ways,
// credit, RST and SHUTDOWN, SEQPACKET boundaries, addressing, and bounded
// resources against a guest that ignores credit.
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "common.h"

namespace conform {
namespace {

namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;
using vs::Op;

constexpr uint16_t op(Op o) { return static_cast<uint16_t>(o); }

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = 0x9e3779b9u * (seed + 1);
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

// Writes everything within `ms`, never blocking longer: a back-end that stops
// reading must fail the case, not hang the runner.
bool write_for(int fd, std::string_view data, int ms) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    if (left <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, std::min(left, 50));
  }
  return true;
}

// A host-initiated connection to `guest_port`, accepted by the guest with
// receive buffer `buf_alloc`. The host program has read its "OK " line.
GuestConn& accept_host(Ctx& ctx, VsockGuest& g, int host_fd, uint32_t guest_port, uint32_t buf_alloc = 256 * 1024) {
  auto p = wait_op(ctx, g, Op::REQUEST, guest_port);
  check(p.has_value(), fmt::format("a REQUEST to guest port {} for the host's CONNECT", guest_port), "nothing");
  GuestConn& c = g.conns()[{guest_port, p->hdr.src_port}];
  c = GuestConn{};
  c.local_port = guest_port;
  c.peer_port = p->hdr.src_port;
  c.established = true;
  c.buf_alloc = buf_alloc;
  c.peer_buf_alloc = p->hdr.buf_alloc;
  c.peer_fwd_cnt = p->hdr.fwd_cnt;
  g.send(g.hdr(Op::RESPONSE, guest_port, c.peer_port));
  const std::string ok = read_line(host_fd, std::min(ctx.remaining_ms(), 2000));
  check(ok.rfind("OK ", 0) == 0, "\"OK <port>\" for the host program once the guest accepted", fmt::format("\"{}\"", ok));
  return c;
}

// Packets of one flow (guest port, host port) that the guest has seen so far, in order.
std::vector<RxPacket> flow_packets(VsockGuest& g, uint32_t guest_port, uint32_t host_port) {
  std::vector<RxPacket> out;
  for (const auto& p : g.backlog())
    if (p.hdr.dst_port == guest_port && p.hdr.src_port == host_port) out.push_back(p);
  return out;
}

// A running device with a stream the guest opened from `guest_port` to the
// host program listening on `host_port`. Nothing polls rx before the
// REQUEST, so the guest's backlog holds the stream from its first packet.
struct GuestOpened {
  GuestOpened(Ctx& ctx, uint32_t guest_port, uint32_t host_port)
      : q(started(ctx)),
        g(q.guest()),
        listener(ctx.host().listen(host_port)),
        host(open_stream(ctx, g, guest_port, host_port, listener.get())),
        c(*g.conn(guest_port, host_port)) {}
  QemuFrontend q;
  VsockGuest& g;
  vhu::UniqueFd listener, host;
  GuestConn& c;
};

// A running device with a stream the host program opened to `guest_port`,
// accepted by the guest with receive buffer `buf_alloc`.
struct HostOpened {
  HostOpened(Ctx& ctx, uint32_t guest_port, uint32_t buf_alloc = 256 * 1024)
      : q(started(ctx)),
        g(q.guest()),
        host(ctx.host().connect(guest_port)),
        c(accept_host(ctx, g, host.get(), guest_port, buf_alloc)) {}
  QemuFrontend q;
  VsockGuest& g;
  vhu::UniqueFd host;
  GuestConn& c;
};

// The guest writes `data` on `c` while the host program reads up to its size
// for `ms`; returns what the host read.
std::string guest_to_host(VsockGuest& g, GuestConn& c, int host_fd, const std::string& data, int ms) {
  std::string got;
  {
    std::jthread reader([&] { got = read_n(host_fd, data.size(), ms); });
    g.write(c, data);
  }
  return got;
}

// The host program writes `data` for up to `ms` while the guest takes it on
// `c`, first letting it pile up in the host socket for `hold_ms`; returns
// whether the back-end took it all. The guest stops at its first anomaly,
// which the caller reports.
bool host_to_guest(Ctx& ctx, VsockGuest& g, GuestConn& c, int host_fd, const std::string& data, int ms,
                   int hold_ms = 0) {
  bool written = false;
  std::jthread writer([&] { written = write_for(host_fd, data, ms); });
  std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
  g.wait_until([&] { return c.received.size() >= data.size() || c.reset || !g.anomalies().empty(); },
               std::min(ctx.remaining_ms(), ms));
  writer.join();
  return written;
}

// ---- config ----

CONFORM_CASE(config_guest_cid,
             .id = "vsock.config_guest_cid",
             .requirements = {"VSOCK-CONFIG-CID", "VSOCK-CID-NOT-RESERVED", "VU-GET-CONFIG-SIZE"},
             .summary = "GET_CONFIG returns the guest's CID: 8 bytes, not a reserved CID, upper 32 bits zero",
             .device = "vsock",
             .protocol_features = {pf::CONFIG}) {
  ctx.handshake();
  auto cfg = ctx.fe().get_config(0, vs::kConfigSize);
  check(cfg.size() == vs::kConfigSize, "8 bytes of config", fmt::format("{} bytes", cfg.size()));
  auto cid = vs::decode_config(cfg);
  check(cid.ok(), "a decodable guest_cid", cid.ok() ? "" : cid.message());
  check(!vs::is_reserved_cid(*cid), "a guest_cid that is not reserved (0, 1, 2, 0xffffffff, upper 32 bits set)",
        fmt::format("guest_cid {:#x}", *cid));
  // A driver may read the field in two 32-bit halves: the upper one is reserved and zero.
  auto hi = ctx.fe().get_config(4, 4);
  check(hi.size() == 4 && hi[0] == 0 && hi[1] == 0 && hi[2] == 0 && hi[3] == 0,
        "GET_CONFIG offset 4 size 4 (guest_cid's upper 32 bits) reading 0",
        fmt::format("{} bytes: {:02x}", hi.size(), fmt::join(hi, " ")));
  if (ctx.cfg().target.mode == TargetMode::Spawn)
    check(*cid == ctx.cid(), fmt::format("the guest_cid the back-end was started with ({})", ctx.cid()),
          fmt::format("guest_cid {}", *cid));
  else if (*cid != ctx.cid())
    ctx.note(fmt::format("guest_cid {} differs from --cid {}", *cid, ctx.cid()));
}

// ---- streams ----

CONFORM_CASE(stream_guest_to_host,
             .id = "vsock.stream_guest_to_host",
             .requirements = {"VSOCK-STREAM-DELIVERY", "VSOCK-CREDIT-RESPECT"},
             .summary = "384 KiB from a guest-initiated stream reach the host program byte for byte, in order, once",
             .device = "vsock",
             .timeout_ms = 10000) {
  GuestOpened s(ctx, 8101, 8100);
  const std::string data = pattern(384 * 1024, 1);
  const std::string got = guest_to_host(s.g, s.c, s.host.get(), data, 4000);
  check(got == data, "the host to read the guest's 384 KiB exactly", first_difference(data, got));
}

CONFORM_CASE(stream_host_to_guest,
             .id = "vsock.stream_host_to_guest",
             .requirements = {"VSOCK-STREAM-DELIVERY", "VSOCK-CREDIT-RESPECT"},
             .summary = "384 KiB from a host-initiated stream reach the guest byte for byte, in order, once",
             .device = "vsock",
             .timeout_ms = 10000) {
  HostOpened s(ctx, 8200);
  const std::string data = pattern(384 * 1024, 2);
  bool written = false;
  {
    std::jthread writer([&] { written = write_for(s.host.get(), data, 4000); });
    s.g.wait_until([&] { return s.c.received.size() >= data.size() || s.c.reset; }, std::min(ctx.remaining_ms(), 4000));
  }
  check(written, "the back-end to take the host program's 384 KiB", "the host socket stayed full");
  check(s.c.received == data, "the guest to receive the host's 384 KiB exactly", first_difference(data, s.c.received));
}

// Linux posts 4 KiB rx buffers, but a driver may post any size; one read of
// the host socket may fill several buffers, and a buffer too small for a
// header met on the way must not come back claiming one. The host writes
// more than the guest's first buffers hold, and the guest waits before it
// reads, so its socket still holds bytes when the mixed buffers come.
CONFORM_CASE(stream_small_rx_buffers,
             .id = "vsock.stream_small_rx_buffers",
             .requirements = {"VQ-USED-LEN", "VSOCK-STREAM-DELIVERY"},
             .summary = "every second rx buffer the guest reposts holds 16 bytes, too few for a packet header: 1 MiB "
                        "from the host still arrives exactly, and no buffer comes back with a used length beyond its "
                        "size",
             .device = "vsock",
             .timeout_ms = 10000) {
  HostOpened s(ctx, 8201, 1024 * 1024);
  s.g.interleave_small_rx(2, 16);
  const std::string data = pattern(1024 * 1024, 3);
  const bool written = host_to_guest(ctx, s.g, s.c, s.host.get(), data, 6000, ctx.cfg().quiet_window_ms);
  ctx.note(fmt::format("{} small rx buffers posted, {} given back empty", s.g.small_rx_posted(),
                       s.g.small_rx_returned()));
  expect_no_anomalies(s.g, "every used rx length within its buffer, every packet well formed");
  check(s.g.small_rx_returned() > 0, "the device to reach a 16-byte buffer and give it back",
        fmt::format("none of the {} came back", s.g.small_rx_posted()));
  check(written, "the back-end to take the host program's 1 MiB", "the host socket stayed full");
  check(s.c.received == data, "the guest to receive the host's 1 MiB exactly", first_difference(data, s.c.received));
}

// Drivers frame a tx packet as they please: header and payload in one
// descriptor, or two (Linux up to 6.16), or the payload spread over one
// descriptor per 32 KiB fragment (Linux 6.17 and later, which some device
// models rejected). Each framing goes on a stream of its own, so one the
// back-end mishandles does not spoil the verdict on the others.
CONFORM_CASE(tx_any_framing,
             .id = "vsock.tx_any_framing",
             .requirements = {"VQ-FRAMING", "VSOCK-STREAM-DELIVERY"},
             .summary = "RW packets framed over one to seven tx descriptors (header alone or split or sharing one with "
                        "payload, 64 KiB payload in two 32 KiB pieces as Linux 6.17 sends, an indirect table) reach "
                        "the host byte for byte",
             .device = "vsock",
             .timeout_ms = 15000) {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto listener = ctx.host().listen(8150);
  const bool indirect = vhu::has_bit(q.acked_features(), vhu::feature::RING_INDIRECT_DESC);
  constexpr uint32_t H = vs::kHdrSize;
  struct Framing {
    const char* what;
    std::vector<uint32_t> pieces;  // descriptor sizes; 0 stands for "half the large payload"
    bool indirect = false;
  };
  const std::vector<Framing> framings = {
      {"header and 4000 payload bytes in one descriptor", {H + 4000}},
      {"header, then 4096 payload bytes (Linux up to 6.16)", {H, 4096}},
      {"header, then the payload in two equal descriptors (Linux 6.17 and later: 32 KiB fragments)", {H, 0, 0}},
      {"header split 20 + 24 bytes, then 1000 payload bytes", {20, H - 20, 1000}},
      {"header with the first 100 payload bytes, then 2900 more", {H + 100, 2900}},
      {"header, then the payload over five descriptors of 512, 1000, 4096, 300 and 2000 bytes",
       {H, 512, 1000, 4096, 300, 2000}},
      {"header, then the payload in two equal descriptors, all through an indirect table", {H, 0, 0}, true},
  };
  std::vector<std::string> failed;
  uint32_t port = 8151;
  for (const auto& f : framings) {
    if (f.indirect && !indirect) {
      ctx.note(fmt::format("not tried (VIRTIO_F_RING_INDIRECT_DESC not offered): {}", f.what));
      continue;
    }
    const uint32_t gport = port++;
    auto host = open_stream(ctx, g, gport, 8150, listener.get());
    GuestConn& c = *g.conn(gport, 8150);
    // The large payload is 64 KiB, or what the back-end's credit allows.
    const uint32_t half = std::min<uint32_t>(32768, c.peer_buf_alloc / 2);
    std::vector<uint32_t> pieces = f.pieces;
    uint32_t total = 0;
    for (auto& n : pieces) total += (n = n ? n : half);
    const std::string data = pattern(total - H, port);
    g.write_framed(c, data, pieces, f.indirect);
    const std::string got = read_n(host.get(), data.size(), std::min(ctx.remaining_ms(), 2000));
    if (got != data) failed.push_back(fmt::format("{}: {}", f.what, first_difference(data, got)));
  }
  expect_no_anomalies(g, "every rx packet well formed");
  check(failed.empty(), "the host to read each packet's payload exactly, whatever its framing",
        fmt::format("{}", fmt::join(failed, "; ")));
}

// Rx buffers too may come in any framing: the packet's header and payload
// go where the chain's descriptors say, whatever their number and sizes. The
// guest posts its buffers in five framings in turn and reads a 1 MiB stream
// through them.
CONFORM_CASE(rx_any_framing,
             .id = "vsock.rx_any_framing",
             .requirements = {"VQ-FRAMING", "VQ-USED-LEN", "VSOCK-STREAM-DELIVERY"},
             .summary = "rx buffers framed in turn over one to five descriptors (header alone, header split, header "
                        "sharing one with payload): 1 MiB from the host arrives exactly and every framing carries "
                        "payload",
             .device = "vsock",
             .timeout_ms = 10000) {
  QemuOptions o;
  o.post_rx_before_start = false;
  QemuFrontend q = started(ctx, o);
  auto& g = q.guest();
  constexpr uint32_t H = vs::kHdrSize;
  constexpr uint32_t B = VsockGuest::kBufSize;
  const std::vector<std::pair<std::string, std::vector<uint32_t>>> framings = {
      {"one descriptor", {B}},
      {"header, then payload", {H, B - H}},
      {"header split 20 + 24, then payload", {20, H - 20, B - H}},
      {"header with 100 payload bytes, then the rest", {H + 100, B - H - 100}},
      {"header, then payload over four descriptors", {H, 1000, 1000, 1000, B - H - 3000}},
  };
  std::vector<std::vector<uint32_t>> sizes;
  for (const auto& f : framings) sizes.push_back(f.second);
  g.frame_rx(sizes);
  g.post_rx_buffers();
  g.rx().kick();
  auto host = ctx.host().connect(8250);
  GuestConn& c = accept_host(ctx, g, host.get(), 8250, 1024 * 1024);
  const std::string data = pattern(1024 * 1024, 9);
  const bool written = host_to_guest(ctx, g, c, host.get(), data, 6000);
  expect_no_anomalies(g, "every used rx length within its buffer, every packet well formed");
  // Which framing the first wrong payload came in, and how much each carried.
  std::vector<size_t> carried(framings.size());
  std::string first_bad;
  size_t at = 0;
  for (const auto& p : flow_packets(g, 8250, c.peer_port)) {
    if (p.hdr.op != op(Op::RW)) continue;
    const std::string got(p.data.begin(), p.data.end());
    if (p.framing >= 0) carried[static_cast<size_t>(p.framing)] += got.size();
    if (first_bad.empty() && data.compare(at, got.size(), got) != 0)
      first_bad = fmt::format("; the RW at stream offset {} differs, in a buffer framed as {}", at,
                              p.framing >= 0 ? framings[static_cast<size_t>(p.framing)].first : "one descriptor");
    at += got.size();
  }
  std::vector<std::string> per;
  for (size_t i = 0; i < framings.size(); ++i) per.push_back(fmt::format("{}: {}", framings[i].first, carried[i]));
  ctx.note(fmt::format("payload bytes per rx framing: {}", fmt::join(per, "; ")));
  check(written, "the back-end to take the host program's 1 MiB", "the host socket stayed full");
  check(c.received == data, "the guest to receive the host's 1 MiB exactly", first_difference(data, c.received) + first_bad);
  std::vector<std::string> idle;
  for (size_t i = 0; i < framings.size(); ++i)
    if (carried[i] == 0) idle.push_back(framings[i].first);
  check(idle.empty(), "payload in rx buffers of every framing", fmt::format("none in: {}", fmt::join(idle, "; ")));
}

// ---- credit ----

CONFORM_CASE(credit_respected,
             .id = "vsock.credit_respected",
             .requirements = {"VSOCK-CREDIT-RESPECT", "VSOCK-STREAM-DELIVERY"},
             .summary = "the host writes 256 KiB to a guest with a 16 KiB buf_alloc: never more RW bytes than the "
                        "credit, and every byte arrives as credit returns",
             .device = "vsock",
             .timeout_ms = 10000) {
  constexpr uint32_t kBufAlloc = 16 * 1024;
  HostOpened s(ctx, 8300, kBufAlloc);
  auto& g = s.g;
  auto& c = s.c;
  const std::string data = pattern(256 * 1024, 3);
  // The guest hands credit back only by answering CREDIT_REQUEST (VsockGuest
  // does so while it polls), so what the device may have in flight is
  // buf_alloc past the fwd_cnt of the guest's latest answer.
  uint32_t total = 0, told = 0;
  std::string violation;
  bool written = false;
  {
    std::jthread writer([&] { written = write_for(s.host.get(), data, 4000); });
    const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 4000));
    while (c.received.size() < data.size() && !c.reset && Clock::now() < end && violation.empty()) {
      for (const auto& p : g.poll_rx()) {
        if (p.hdr.dst_port != 8300) continue;
        if (p.hdr.op == op(Op::RW)) {
          total += p.hdr.len;
          if (total - told > kBufAlloc)
            violation = fmt::format("{} RW bytes sent against a guest that had reported fwd_cnt {} with buf_alloc {}",
                                    total, told, kBufAlloc);
        } else if (p.hdr.op == op(Op::CREDIT_REQUEST)) {
          told = total;
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }
  check(violation.empty(), "RW only while the guest has free buffer space", violation);
  check(written, "the back-end to take the host program's 256 KiB", "the host socket stayed full");
  check(c.received == data, "every byte once credit returned", first_difference(data, c.received));
}

CONFORM_CASE(credit_request_answered,
             .id = "vsock.credit_request_answered",
             .requirements = {"VSOCK-CREDIT-REQUEST", "VSOCK-CREDIT-FIELDS"},
             .summary = "CREDIT_REQUEST on an open stream is answered with CREDIT_UPDATE",
             .device = "vsock") {
  GuestOpened s(ctx, 8401, 8400);
  auto& g = s.g;
  g.backlog().clear();
  g.send(g.hdr(Op::CREDIT_REQUEST, 8401, 8400));
  auto p = wait_op(ctx, g, Op::CREDIT_UPDATE, 8401, 1000);
  check(p.has_value(), "a CREDIT_UPDATE answering the guest's CREDIT_REQUEST", "nothing within 1 s");
  check(p->hdr.buf_alloc > 0 && p->hdr.fwd_cnt == 0, "buf_alloc > 0 and fwd_cnt 0 (nothing sent yet)",
        vs::describe(p->hdr));
}

CONFORM_CASE(credit_update_unasked,
             .id = "vsock.credit_update_unasked",
             .requirements = {"VSOCK-CREDIT-UPDATE"},
             .summary = "a guest that never asks (as Linux) still gets credit back: 4x buf_alloc flows to the host",
             .device = "vsock",
             .timeout_ms = 10000) {
  GuestOpened s(ctx, 8501, 8500);
  check(s.c.peer_buf_alloc > 0, "a non-zero buf_alloc in the RESPONSE", "buf_alloc 0");
  const size_t n = std::min<size_t>(4ull * s.c.peer_buf_alloc, 1u << 20);
  const std::string data = pattern(n, 5);
  // The guest's write fails when no credit comes back within 2 s.
  const std::string got = guest_to_host(s.g, s.c, s.host.get(), data, 3000);
  check(got == data, fmt::format("the host to read all {} bytes", n), first_difference(data, got));
}

CONFORM_CASE(credit_fields_valid,
             .id = "vsock.credit_fields_valid",
             .requirements = {"VSOCK-CREDIT-FIELDS"},
             .summary = "every packet of a stream carries buf_alloc > 0 and a fwd_cnt that never runs back or ahead "
                        "of the bytes the guest sent",
             .device = "vsock",
             .timeout_ms = 10000) {
  GuestOpened s(ctx, 8601, 8600);
  auto& g = s.g;
  auto& c = s.c;
  const std::string up = pattern(100 * 1024, 6);
  const std::string got = guest_to_host(g, c, s.host.get(), up, 3000);
  check(got == up, "the host to read the guest's 100 KiB", first_difference(up, got));
  const std::string down = pattern(20 * 1024, 7);
  check(write_for(s.host.get(), down, 2000), "the host socket to take 20 KiB", "full");
  g.wait_until([&] { return c.received.size() >= down.size(); }, std::min(ctx.remaining_ms(), 2000));
  check(c.received == down, "the guest to receive the host's 20 KiB", first_difference(down, c.received));
  // Let the device report what it forwarded.
  g.send(g.hdr(Op::CREDIT_REQUEST, 8601, 8600));
  g.settle(ctx.cfg().quiet_window_ms);
  auto pkts = flow_packets(g, 8601, 8600);
  check(!pkts.empty(), "packets on the stream", "none");
  uint32_t last = 0;
  for (const auto& p : pkts) {
    const auto& h = p.hdr;
    check(h.type == vs::kTypeStream, "type STREAM on every packet of the stream", vs::describe(h));
    check(h.buf_alloc > 0, "buf_alloc > 0 on every packet of the stream", vs::describe(h));
    check(h.fwd_cnt - last < 0x80000000u, "fwd_cnt never going back", fmt::format("{} after {}: {}", h.fwd_cnt, last,
                                                                                   vs::describe(h)));
    check(h.fwd_cnt <= c.tx_cnt, fmt::format("fwd_cnt at most the {} bytes the guest sent", c.tx_cnt), vs::describe(h));
    last = h.fwd_cnt;
  }
  check(last == c.tx_cnt, fmt::format("fwd_cnt {} once the host read everything", c.tx_cnt),
        fmt::format("last fwd_cnt {}", last));
}

// The device owes the guest a CREDIT_UPDATE and the guest has left it no rx
// buffer to put it in: tx must go on regardless. The guest's data before and
// after that point must reach the host, and the update must come once rx
// buffers are back.
CONFORM_CASE(tx_while_rx_full,
             .id = "vsock.tx_while_rx_full",
             .requirements = {"VSOCK-TX-WHILE-RX-FULL", "VSOCK-CREDIT-REQUEST"},
             .summary = "with no rx buffer left and a CREDIT_UPDATE owed to the guest, the guest's data still reaches "
                        "the host; the update comes once rx buffers return",
             .device = "vsock",
             .timeout_ms = 10000) {
  QemuOptions o;
  o.post_rx_before_start = false;
  QemuFrontend q = started(ctx, o);
  auto& g = q.guest();
  auto listener = ctx.host().listen(8160);
  // One rx buffer, for the RESPONSE; none after it.
  g.hold_rx(true);
  g.post_rx_buffers(1);
  g.rx().kick();
  auto host = open_stream(ctx, g, 8161, 8160, listener.get());
  GuestConn& c = *g.conn(8161, 8160);
  check(g.rx().used_idx() == g.rx().dq().avail_idx(), "the RESPONSE in the guest's only rx buffer",
        "an rx buffer still unused");
  const size_t part = std::min<size_t>(16384, c.peer_buf_alloc / 4);
  const std::string first = pattern(part, 10), second = pattern(part, 11);
  g.write(c, first);
  std::string got = read_n(host.get(), part, std::min(ctx.remaining_ms(), 2000));
  check(got == first, fmt::format("the host to read the guest's first {} bytes while rx has no buffer", part),
        first_difference(first, got));
  g.send(g.hdr(Op::CREDIT_REQUEST, 8161, 8160));
  g.settle(ctx.cfg().quiet_window_ms);  // the device finds rx full
  g.write(c, second);
  got = read_n(host.get(), part, std::min(ctx.remaining_ms(), 2000));
  check(got == second,
        fmt::format("the host to read the guest's next {} bytes, sent while the device owed a CREDIT_UPDATE and had "
                    "no rx buffer for it",
                    part),
        first_difference(second, got));
  g.hold_rx(false);
  g.post_rx_buffers();
  g.rx().kick();
  auto p = wait_op(ctx, g, Op::CREDIT_UPDATE, 8161);
  check(p.has_value(), "the owed CREDIT_UPDATE once rx buffers are back", "none within 2 s");
  expect_no_anomalies(g, "every rx packet well formed");
}

// ---- RST ----

CONFORM_CASE(rst_unknown_connection,
             .id = "vsock.rst_unknown_connection",
             .requirements = {"VSOCK-RST-UNKNOWN-CONN"},
             .summary = "RW and SHUTDOWN for a connection that does not exist are answered with RST",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  const std::string x = "no such connection";
  g.send(g.hdr(Op::RW, 8701, 8700), {reinterpret_cast<const uint8_t*>(x.data()), x.size()});
  auto p = wait_op(ctx, g, Op::RST, 8701, 1000);
  check(p && p->hdr.src_port == 8700, "RST for an RW on no connection", p ? vs::describe(p->hdr) : "nothing in 1 s");
  auto s = g.hdr(Op::SHUTDOWN, 8702, 8700);
  s.flags = vs::kShutdownSend | vs::kShutdownRcv;
  g.send(s);
  p = wait_op(ctx, g, Op::RST, 8702, 1000);
  check(p && p->hdr.src_port == 8700, "RST for a SHUTDOWN on no connection", p ? vs::describe(p->hdr) : "nothing in 1 s");
}

CONFORM_CASE(rst_closed_port,
             .id = "vsock.rst_closed_port",
             .requirements = {"VSOCK-RST-NO-LISTENER"},
             .summary = "a REQUEST to a host port nobody listens on is answered with RST",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  ::unlink(fmt::format("{}_{}", ctx.host().uds(), 8800).c_str());
  auto& c = g.connect(8801, 8800);
  bool ok = g.wait_until([&] { return c.established || c.reset; }, std::min(ctx.remaining_ms(), 1000));
  check(ok && c.reset, "RST for a REQUEST to a closed host port", c.established ? "RESPONSE" : "nothing in 1 s");
}

CONFORM_CASE(no_rst_for_rst,
             .id = "vsock.no_rst_for_rst",
             .requirements = {"VSOCK-RST-NOT-ANSWERED"},
             .summary = "an RST for a flow that does not exist is not answered (cloud-hypervisor #8692)",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  g.send(g.hdr(Op::RST, 8901, 8900));
  auto p = wait_op(ctx, g, Op::RST, 8901, ctx.cfg().quiet_window_ms);
  check(!p, "no RST answering an RST", p ? vs::describe(p->hdr) : "");
}

CONFORM_CASE(rst_unknown_type,
             .id = "vsock.rst_unknown_type",
             .requirements = {"VSOCK-RST-UNKNOWN-TYPE"},
             .summary = "a REQUEST with an unknown type (7) to a listening host port is answered with RST, not connected",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto listener = ctx.host().listen(9000);
  auto h = g.hdr(Op::REQUEST, 9001, 9000);
  h.type = 7;
  g.send(h);
  auto p = g.wait_rx([](const RxPacket& p) { return p.hdr.dst_port == 9001; }, std::min(ctx.remaining_ms(), 1000));
  check(p && p->hdr.op == op(Op::RST), "RST for a packet of unknown type", p ? vs::describe(p->hdr) : "nothing in 1 s");
  auto conn = accept_timeout(listener.get(), 0);
  check(!conn.valid(), "no host connection for a packet of unknown type", "the back-end connected to the host port");
}

// ---- SHUTDOWN ----

// The host's shutdown(SHUT_WR) as the guest must see it, stream or SEQPACKET:
// SHUTDOWN with SEND, no RST, after `first` (what the host sent before it).
void expect_host_half_close_told(Ctx& ctx, VsockGuest& g, const GuestConn& c, const std::string& first) {
  bool ok = g.wait_until([&] { return (c.shutdown_flags & vs::kShutdownSend) || c.reset; },
                         std::min(ctx.remaining_ms(), 1000));
  check(ok && !c.reset, "SHUTDOWN with VIRTIO_VSOCK_SHUTDOWN_F_SEND after the host's shutdown(SHUT_WR)",
        c.reset ? "RST" : "nothing within 1 s");
  check(c.received == first, "the data sent before the half-close, first", fmt::format("\"{}\"", c.received));
}

// Checked last, once the guest has sent after the half-close: the bits add
// up, and RECEIVE at any point would have told the guest not to.
void expect_host_still_reads(const GuestConn& c) {
  check(!(c.shutdown_flags & vs::kShutdownRcv), "no VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE: the host still reads",
        fmt::format("SHUTDOWN with RECEIVE (flags {:#x})", c.shutdown_flags));
}

CONFORM_CASE(shutdown_guest_to_host,
             .id = "vsock.shutdown_guest_to_host",
             .requirements = {"VSOCK-SHUTDOWN"},
             .summary = "the guest's SHUTDOWN(SEND) reaches the host as end of stream after the data; the other "
                        "direction stays open",
             .device = "vsock") {
  GuestOpened st(ctx, 9101, 9100);
  auto& g = st.g;
  auto& c = st.c;
  auto& host = st.host;
  g.write(c, "last words;");
  auto s = g.hdr(Op::SHUTDOWN, 9101, 9100);
  s.flags = vs::kShutdownSend;
  g.send(s);
  std::string got = read_n(host.get(), 11, std::min(ctx.remaining_ms(), 1000));
  check(got == "last words;", "the data sent before SHUTDOWN", fmt::format("\"{}\"", got));
  bool eof = false;
  std::string more = read_some(host.get(), std::min(ctx.remaining_ms(), 1000), &eof);
  check(eof && more.empty(), "end of stream on the host socket after the guest's SHUTDOWN(SEND)",
        more.empty() ? "nothing within 1 s" : fmt::format("\"{}\"", more));
  check(write_all(host.get(), "still open;"), "the host to write after the guest's half-close", "write failed");
  bool ok = g.wait_until([&] { return c.received.size() >= 11 || c.reset; }, std::min(ctx.remaining_ms(), 1000));
  check(ok && c.received == "still open;", "the guest to receive after its own SHUTDOWN(SEND)",
        fmt::format("\"{}\"{}", c.received, c.reset ? " and RST" : ""));
}

CONFORM_CASE(shutdown_host_to_guest,
             .id = "vsock.shutdown_host_to_guest",
             .requirements = {"VSOCK-SHUTDOWN"},
             .summary = "the host's shutdown(SHUT_WR) reaches the guest as SHUTDOWN with the SEND bit, not "
                        "RECEIVE, after the data; the other direction stays open",
             .device = "vsock") {
  HostOpened st(ctx, 9200);
  auto& g = st.g;
  auto& c = st.c;
  auto& host = st.host;
  check(write_all(host.get(), "bye;"), "the host socket to take data", "write failed");
  ::shutdown(host.get(), SHUT_WR);
  expect_host_half_close_told(ctx, g, c, "bye;");
  g.write(c, "reply;");
  std::string got = read_n(host.get(), 6, std::min(ctx.remaining_ms(), 1000));
  check(got == "reply;", "the host to read the guest's data after its own half-close", fmt::format("\"{}\"", got));
  expect_host_still_reads(c);
}

// ---- SEQPACKET ----

vhu::UniqueFd listen_seqpacket(const std::string& path) {
  ::unlink(path.c_str());
  vhu::UniqueFd l(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  check(l.valid() && path.size() < sizeof a.sun_path, "a SOCK_SEQPACKET socket for " + path, std::strerror(errno));
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  check(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(l.get(), 4) == 0,
        "to listen on " + path, std::strerror(errno));
  return l;
}

std::string recv_message(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) <= 0) return "(nothing)";
  std::string buf(65536, '\0');
  const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

// A running device with a SEQPACKET connection the guest opened from
// `guest_port` to a SOCK_SEQPACKET host listener on `host_port`; the guest's
// backlog is empty once it is established.
struct SeqpacketOpened {
  SeqpacketOpened(Ctx& ctx, uint32_t guest_port, uint32_t host_port, bool reading = true)
      : q(started(ctx)), g(q.guest()), c(g.conns()[{guest_port, host_port}]) {
    if (!vhu::has_bit(q.acked_features(), vhu::feature::VSOCK_F_SEQPACKET))
      skip("VIRTIO_VSOCK_F_SEQPACKET offered but not negotiated");
    const std::string path = fmt::format("{}_{}", ctx.host().uds(), host_port);
    listener = listen_seqpacket(path);
    c = GuestConn{};
    c.local_port = guest_port;
    c.peer_port = host_port;
    c.type = vs::kTypeSeqpacket;
    c.reading = reading;
    auto req = g.hdr(Op::REQUEST, guest_port, host_port);
    req.type = vs::kTypeSeqpacket;
    g.send(req);
    host = accept_timeout(listener.get(), std::min(ctx.remaining_ms(), 2000));
    check(host.valid(), "the back-end to connect to the SOCK_SEQPACKET listener " + path, "no connection");
    bool ok = g.wait_until([&] { return c.established || c.reset; }, std::min(ctx.remaining_ms(), 2000));
    check(ok && c.established, "a RESPONSE to the SEQPACKET REQUEST", c.reset ? "RST" : "nothing");
    g.backlog().clear();
  }
  QemuFrontend q;
  VsockGuest& g;
  GuestConn& c;
  vhu::UniqueFd listener, host;
};

CONFORM_CASE(seqpacket_boundaries,
             .id = "vsock.seqpacket_boundaries",
             .requirements = {"VSOCK-SEQPACKET-EOM"},
             .summary = "SEQPACKET keeps message boundaries both ways (EOM on the last RW of each message)",
             .device = "vsock",
             .features = {vhu::feature::VSOCK_F_SEQPACKET}) {
  SeqpacketOpened s(ctx, 9301, 9300);
  auto& g = s.g;
  auto& c = s.c;
  auto& host = s.host;
  // Guest to host: a short message, then one that takes two RW packets.
  const std::string m1 = pattern(100, 8), m2 = pattern(6000, 9);
  g.write_message(c, m1);
  g.write_message(c, m2);
  std::string r1 = recv_message(host.get(), std::min(ctx.remaining_ms(), 1000));
  std::string r2 = recv_message(host.get(), std::min(ctx.remaining_ms(), 1000));
  check(r1 == m1 && r2 == m2, "the host to receive the guest's two messages (100 and 6000 bytes) as two messages",
        fmt::format("{} and {} bytes", r1.size(), r2.size()));
  // Host to guest: the guest rebuilds messages from EOM.
  const std::string h1 = pattern(50, 10), h2 = pattern(5000, 11);
  check(::send(host.get(), h1.data(), h1.size(), 0) == static_cast<ssize_t>(h1.size()) &&
            ::send(host.get(), h2.data(), h2.size(), 0) == static_cast<ssize_t>(h2.size()),
        "the host to send two messages", std::strerror(errno));
  g.backlog().clear();
  g.wait_until([&] { return c.received.size() >= h1.size() + h2.size() || c.reset; },
               std::min(ctx.remaining_ms(), 2000));
  std::vector<std::string> msgs(1);
  for (const auto& p : flow_packets(g, 9301, 9300)) {
    if (p.hdr.op != op(Op::RW)) continue;
    check(p.hdr.type == vs::kTypeSeqpacket, "type SEQPACKET on the connection's RW packets", vs::describe(p.hdr));
    add_to_messages(msgs, p);
  }
  std::string seen;
  for (size_t i = 0; i + 1 < msgs.size(); ++i) seen += fmt::format("{}{}", i ? ", " : "", msgs[i].size());
  check(msgs.size() == 3 && msgs[0] == h1 && msgs[1] == h2 && msgs[2].empty(),
        "two messages of 50 and 5000 bytes, each ended by EOM",
        fmt::format("EOM-terminated messages of [{}] bytes, {} bytes without EOM", seen, msgs.back().size()));
}

// Linux (since 6.12.92) refuses a packet once the packets it holds for a
// socket, plus this one, times SKB_TRUESIZE(0) exceed buf_alloc, and resets
// the connection; it merges queued stream packets when near the limit, never
// one that ends a message (spec/guest-runs/). Small SEQPACKET messages are the
// traffic that meets it whatever the kernel's age.
CONFORM_CASE(seqpacket_within_linux_packet_limit,
             .id = "vsock.seqpacket_within_linux_packet_limit",
             .requirements = {"LINUX-RX-PACKET-LIMIT", "VSOCK-SEQPACKET-EOM"},
             .summary = "600 host messages of 300 bytes to a guest that reads none yet: at most buf_alloc / 576 RW "
                        "packets held (Linux resets at the next), and all 600, boundaries kept, once it reads",
             .device = "vsock",
             .features = {vhu::feature::VSOCK_F_SEQPACKET},
             .timeout_ms = 10000) {
  constexpr int kMessages = 600;
  constexpr size_t kSize = 300;            // above GOOD_COPY_LEN (128), below which Linux merges a packet
  SeqpacketOpened s(ctx, 9701, 9700, /*reading=*/false);
  auto& g = s.g;
  auto& c = s.c;
  auto& host = s.host;

  const std::string all = pattern(kMessages * kSize, 12);
  int sent = 0;
  // The host sends what its socket takes; the guest keeps every packet.
  expect_within_linux_packet_limit(ctx, g, c, all, kSize, sent, [&] {
    while (sent < kMessages &&
           ::send(host.get(), all.data() + sent * kSize, kSize, MSG_DONTWAIT | MSG_NOSIGNAL) == kSize)
      ++sent;
    std::vector<RxPacket> mine;
    for (auto& p : g.poll_rx())
      if (p.hdr.dst_port == 9701 && p.hdr.src_port == 9700) mine.push_back(std::move(p));
    return mine;
  });
}

// The same limit on a stream. Kernels from 6.12.92 until they learnt to merge
// queued stream packets reset streams too (libkrun #795 and gominimal/minimal
// #869 lost uploads to it). The host writes each piece only once the device
// has taken the one before out of its socket, so a device that forwards each
// read as a packet of its own makes one packet per write; a device that
// stops reading (its credit or share used up) gets the rest as one burst.
CONFORM_CASE(stream_within_linux_packet_limit,
             .id = "vsock.stream_within_linux_packet_limit",
             .requirements = {"LINUX-RX-PACKET-LIMIT", "VSOCK-STREAM-DELIVERY"},
             .summary = "800 host writes of 300 bytes, each once the back-end took the one before, to a guest that "
                        "reads none yet: at most buf_alloc / 576 RW packets held, and every byte once it reads",
             .device = "vsock",
             .timeout_ms = 10000) {
  constexpr int kWrites = 800;  // 240,000 bytes: within the 256 KiB credit
  constexpr size_t kSize = 300;  // above GOOD_COPY_LEN (128), below which Linux merges a packet
  // A device this slow to read is taken to have stopped (a slow one merely
  // merges pieces, which can only help it).
  constexpr auto kPace = std::chrono::milliseconds(250);
  HostOpened s(ctx, 9711);
  s.c.reading = false;
  const int host = s.host.get();
  const std::string all = pattern(kWrites * kSize, 13);
  int sent = 0, one_by_one = 0;
  bool paced = true;
  auto last_write = Clock::now();
  expect_within_linux_packet_limit(ctx, s.g, s.c, all, kSize, sent, [&] {
    int queued = 0;
    if (paced && sent > 0 && ::ioctl(host, SIOCOUTQ, &queued) == 0 && queued > 0 &&
        Clock::now() - last_write > kPace)
      paced = false;
    if (sent < kWrites && (!paced || queued == 0)) {
      do {
        if (::send(host, all.data() + sent * kSize, kSize, MSG_DONTWAIT | MSG_NOSIGNAL) != kSize) break;
        ++sent;
        one_by_one += paced;
        last_write = Clock::now();
      } while (!paced && sent < kWrites);
    }
    std::vector<RxPacket> mine;
    for (auto& p : s.g.poll_rx())
      if (p.hdr.dst_port == 9711) mine.push_back(std::move(p));
    return mine;
  });
  ctx.note(fmt::format("the host wrote {} of the {} pieces one at a time{}", one_by_one, kWrites,
                       paced ? ""
                             : fmt::format(", the rest at once after the back-end left one in its socket for {} ms",
                                           kPace.count())));
}

// A read of 0 bytes from a SOCK_SEQPACKET socket is a message of no bytes or
// the end of the peer's stream; a device that takes the first for the second
// ends a connection that had more to say.
CONFORM_CASE(seqpacket_empty_message,
             .id = "vsock.seqpacket_empty_message",
             .requirements = {"VSOCK-SEQPACKET-EOM"},
             .summary = "a SEQPACKET message of no bytes passes both ways as one RW of length 0 with EOM, and the "
                        "connection goes on; the host's last message, of no bytes, arrives before its close does",
             .device = "vsock",
             .features = {vhu::feature::VSOCK_F_SEQPACKET}) {
  SeqpacketOpened s(ctx, 9801, 9800);
  auto& g = s.g;
  auto& c = s.c;
  // Host to guest: an empty message, then "abc".
  check(::send(s.host.get(), "", 0, 0) == 0 && ::send(s.host.get(), "abc", 3, 0) == 3,
        "the host to send an empty message and a message of 3 bytes", std::strerror(errno));
  g.wait_until([&] { return c.received.size() >= 3 || c.reset || c.shutdown_flags; },
               std::min(ctx.remaining_ms(), 2000));
  std::string seen;
  std::vector<std::string> msgs(1);
  for (const auto& p : flow_packets(g, 9801, 9800)) {
    seen += fmt::format("{}{}", seen.empty() ? "" : "; ", vs::describe(p.hdr));
    if (p.hdr.op != op(Op::RW)) continue;
    add_to_messages(msgs, p);
  }
  check(!c.reset && !c.shutdown_flags && msgs.size() == 3 && msgs[0].empty() && msgs[1] == "abc",
        "an RW of length 0 with EOM, then \"abc\" with EOM, and the connection still open",
        seen.empty() ? "nothing" : seen);
  // Guest to host: an empty message reaches the host at once, not with the next.
  g.write_message(c, "");
  pollfd p{s.host.get(), POLLIN, 0};
  check(::poll(&p, 1, std::min(ctx.remaining_ms(), 1000)) == 1, "the guest's empty message at the host",
        "nothing within 1 s");
  char buf[16];
  check(::recv(s.host.get(), buf, sizeof buf, MSG_DONTWAIT) == 0, "a message of 0 bytes at the host",
        "a message with bytes");
  g.write_message(c, "xyz");
  const std::string next = recv_message(s.host.get(), std::min(ctx.remaining_ms(), 1000));
  check(next == "xyz", "the guest's next message, \"xyz\", after the empty one (not the end of the stream)",
        fmt::format("\"{}\"", next));
  // Host to guest: an empty message and then the close. Both read as 0 bytes
  // at the device; the message must still come first.
  g.backlog().clear();
  check(::send(s.host.get(), "", 0, 0) == 0, "the host to send a last message of no bytes", std::strerror(errno));
  s.host.reset();
  g.wait_until([&] { return c.reset || c.shutdown_flags; }, std::min(ctx.remaining_ms(), 2000));
  seen.clear();
  bool message = false, end = false;
  for (const auto& pk : flow_packets(g, 9801, 9800)) {
    seen += fmt::format("{}{}", seen.empty() ? "" : "; ", vs::describe(pk.hdr));
    if (pk.hdr.op == op(Op::RW) && pk.hdr.len == 0 && (pk.hdr.flags & vs::kSeqEom) && !end) message = true;
    end = end || pk.hdr.op == op(Op::SHUTDOWN) || pk.hdr.op == op(Op::RST);
  }
  check(message && end, "an RW of length 0 with EOM, then SHUTDOWN or RST for the host's close",
        seen.empty() ? "nothing" : seen);
}

// A SEQPACKET half-close is a half-close too: the host reads on, and a Linux
// guest told RECEIVE would fail its next send with EPIPE.
CONFORM_CASE(seqpacket_shutdown_host_to_guest,
             .id = "vsock.seqpacket_shutdown_host_to_guest",
             .requirements = {"VSOCK-SHUTDOWN", "VSOCK-SEQPACKET-EOM"},
             .summary = "the host's shutdown(SHUT_WR) of a SEQPACKET connection reaches the guest as SHUTDOWN with "
                        "SEND, not RECEIVE, after its last message; the guest's next message still reaches the host",
             .device = "vsock",
             .features = {vhu::feature::VSOCK_F_SEQPACKET}) {
  SeqpacketOpened s(ctx, 9811, 9810);
  auto& g = s.g;
  auto& c = s.c;
  check(::send(s.host.get(), "bye;", 4, 0) == 4 && ::shutdown(s.host.get(), SHUT_WR) == 0,
        "the host to send a last message and shut down writing", std::strerror(errno));
  expect_host_half_close_told(ctx, g, c, "bye;");
  g.write_message(c, "reply;");
  const std::string got = recv_message(s.host.get(), std::min(ctx.remaining_ms(), 1000));
  check(got == "reply;", "the guest's message at the host after the host's half-close", fmt::format("\"{}\"", got));
  expect_host_still_reads(c);
}

// ---- addressing ----

CONFORM_CASE(spoofed_src_cid_dropped,
             .id = "vsock.spoofed_src_cid_dropped",
             .requirements = {"VSOCK-SRC-CID"},
             .summary = "a REQUEST whose src_cid is not the guest's CID is dropped: no host connection, no answer",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto listener = ctx.host().listen(9400);
  auto h = g.hdr(Op::REQUEST, 9401, 9400);
  h.src_cid = ctx.cid() + 100;
  g.send(h);
  auto p = g.wait_rx([](const RxPacket& p) { return p.hdr.dst_port == 9401; }, ctx.cfg().quiet_window_ms);
  auto conn = accept_timeout(listener.get(), 0);
  check(!conn.valid(), fmt::format("no host connection for a REQUEST from CID {} (the guest is {})", h.src_cid, ctx.cid()),
        "the back-end connected to the host port");
  check(!p || p->hdr.op == op(Op::RST), "no RESPONSE to a spoofed REQUEST", p ? vs::describe(p->hdr) : "");
  // The guest's own REQUEST on the same ports still works.
  auto host = open_stream(ctx, g, 9401, 9400, listener.get());
}

CONFORM_CASE(outside_groups_refused,
             .id = "vsock.outside_groups_refused",
             .requirements = {"VSOCK-DST-CID-REFUSED", "VSOCK-RST-NO-LISTENER"},
             .summary = "a REQUEST to a CID that is neither the host nor a sibling in the guest's groups gets RST "
                        "and reaches nobody",
             .device = "vsock") {
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto listener = ctx.host().listen(9500);
  // A CID no test set-up gives a VM: the guest's own plus a large offset.
  const uint64_t other = (ctx.cid() + 0x3c000000u) & 0x7fffffffu;
  auto h = g.hdr(Op::REQUEST, 9501, 9500);
  h.dst_cid = other;
  g.send(h);
  auto p = g.wait_rx([](const RxPacket& p) { return p.hdr.dst_port == 9501; }, std::min(ctx.remaining_ms(), 1000));
  auto conn = accept_timeout(listener.get(), 0);
  check(!conn.valid(), fmt::format("nobody reached through CID {}", other), "the host program on port 9500 was connected");
  check(p && p->hdr.op == op(Op::RST), fmt::format("RST for a REQUEST to CID {}", other),
        p ? vs::describe(p->hdr) : "nothing in 1 s");
}

// ---- resources ----

uint64_t vm_rss_kib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

CONFORM_CASE(ignored_credit_bounded,
             .id = "vsock.ignored_credit_bounded",
             .requirements = {"VSOCK-BOUNDED-RESOURCES", "VSOCK-CREDIT-RESPECT"},
             .summary = "a guest that ignores credit and pushes 16 MiB at a host that never reads cannot make the "
                        "back-end's resident memory grow by more than 8 MiB",
             .device = "vsock",
             .timeout_ms = 15000) {
  if (!ctx.backend().spawned())
    skip("the back-end's resident memory is only visible when the runner spawns it (--spawn/--profile), not with "
         "--connect/--listen");
  GuestOpened s(ctx, 9601, 9600);  // the host never reads
  auto& g = s.g;
  const uint64_t rss0 = vm_rss_kib(ctx.backend().pid());
  check(rss0 > 0, "VmRSS in /proc/<pid>/status of the back-end", "not readable");
  const std::string chunk = pattern(VsockGuest::kBufSize - vs::kHdrSize, 12);
  const size_t packets = (16u << 20) / chunk.size();
  size_t sent = 0;
  for (; sent < packets; ++sent) {
    // Room on tx, or the back-end has stopped taking tx (allowed: "further
    // processing is not possible"), which ends the push.
    if (g.tx().dq().num_free() == 0 && !g.wait_until([&] { return g.tx().dq().num_free() > 0; }, 300)) break;
    g.poll_rx();
    g.send(g.hdr(Op::RW, 9601, 9600), {reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size()});
  }
  g.settle(ctx.cfg().quiet_window_ms);
  const uint64_t rss1 = vm_rss_kib(ctx.backend().pid());
  ctx.note(fmt::format("pushed {} KiB ignoring credit; VmRSS {} -> {} KiB", sent * chunk.size() / 1024, rss0, rss1));
  check(rss1 < rss0 + 8 * 1024, "resident memory bounded against a guest ignoring credit (growth < 8 MiB)",
        fmt::format("VmRSS grew from {} to {} KiB after {} KiB pushed", rss0, rss1, sent * chunk.size() / 1024));
  ctx.expect_alive("after a guest ignored credit");
}

}  // namespace
}  // namespace conform
