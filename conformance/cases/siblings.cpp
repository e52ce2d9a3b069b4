// Sibling VMs: two guests that the back-end puts in one group reach each
// other by CID. The virtio text addresses a flow by (cid, port) and names
// only the host's CID; guest-to-guest delivery is a back-end convention
// (rust-vmm vhost-device-vsock's --groups, the reference back-end's
// --vm ...,groups=). So these cases run only against a target that declares
// a second VM (CaseInfo::siblings), and then hold it to what it offers.
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

namespace vs = vhu::vsock;

// Bytes that differ per direction and per position, so a lost, repeated or
// misplaced packet changes what arrives.
std::string payload(size_t n, char tag) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(tag + i * 7 + (i >> 8));
  return s;
}

// `n` bytes from `from` to `to` on an established guest-to-guest stream,
// checked byte for byte.
void send_across(Ctx& ctx, VsockGuest& from, GuestConn& out, VsockGuest& to, GuestConn& in, size_t n, char tag,
                 const std::string& what) {
  const std::string data = payload(n, tag);
  const size_t before = in.received.size();
  from.write(out, data);
  // The sender's tx must drain as the receiver's rx fills: poll both.
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 3000));
  while (in.received.size() < before + n && !in.reset && Clock::now() < end) {
    to.wait_until([&] { return in.received.size() >= before + n || in.reset; }, 5);
    from.reclaim_tx();
  }
  const std::string got = in.received.substr(before);
  if (got == data) return;
  size_t at = 0;
  while (at < got.size() && at < data.size() && got[at] == data[at]) ++at;
  fail(fmt::format("{} bytes {} exactly once", n, what),
       in.reset ? fmt::format("RST after {} bytes", got.size())
                : fmt::format("{} bytes, the first difference at offset {}", got.size(), at));
}

CONFORM_CASE(sibling_stream,
             .id = "vsock.sibling_stream",
             .requirements = {"VSOCK-SIBLING-ROUTE", "VSOCK-STREAM-DELIVERY"},
             .summary = "the second VM's guest connects to the first's (listening) by CID: the REQUEST and RESPONSE "
                        "keep both addresses, and 48 KiB go each way byte-exact",
             .device = "vsock",
             .siblings = true) {
  constexpr uint32_t kListenPort = 9600, kPeerPort = 9601;
  constexpr size_t kBytes = 48 * 1024;
  QemuFrontend qb = started(ctx);
  Ctx& sib = ctx.sibling();
  QemuFrontend qa = started(sib);
  auto& b = qb.guest();
  auto& a = qa.guest();
  b.allow_peer(sib.cid());
  a.allow_peer(ctx.cid());

  auto& ca = a.connect_to(ctx.cid(), kPeerPort, kListenPort);
  auto req = wait_op(ctx, b, vs::Op::REQUEST, kListenPort);
  check(req.has_value(),
        fmt::format("the REQUEST of CID {} port {} to reach CID {} port {}", sib.cid(), kPeerPort, ctx.cid(), kListenPort),
        "nothing in 2 s");
  check(req->hdr.src_cid == sib.cid() && req->hdr.src_port == kPeerPort && req->hdr.dst_cid == ctx.cid(),
        fmt::format("the REQUEST to come from {}:{} and address {}:{}", sib.cid(), kPeerPort, ctx.cid(), kListenPort),
        vs::describe(req->hdr));
  auto& cb = b.accept(*req);
  bool ok = a.wait_until([&] { return ca.established || ca.reset; }, std::min(ctx.remaining_ms(), 2000));
  check(ok && ca.established, fmt::format("the RESPONSE of CID {} to reach CID {}", ctx.cid(), sib.cid()),
        ca.reset ? "RST" : "nothing in 2 s");

  send_across(ctx, a, ca, b, cb, kBytes, 'a', fmt::format("from CID {} to CID {}", sib.cid(), ctx.cid()));
  send_across(ctx, b, cb, a, ca, kBytes, 'b', fmt::format("from CID {} to CID {}", ctx.cid(), sib.cid()));
  for (VsockGuest* x : {&a, &b})
    expect_no_anomalies(*x, fmt::format("no stray or misaddressed packet on CID {}", x->cid()));
}

// Linux meters what it sends to a peer by bytes only, and a Linux receiver
// (6.12.92 and later) resets a flow once it holds more packets than its
// buf_alloc / SKB_TRUESIZE(0), never merging one that ends a SEQPACKET
// message. Between two Linux guests nobody but the device can keep small
// messages within that: it must hold what the receiver has no room for yet.
CONFORM_CASE(sibling_seqpacket_packet_limit,
             .id = "vsock.sibling_seqpacket_within_linux_packet_limit",
             .requirements = {"LINUX-RX-PACKET-LIMIT", "VSOCK-SIBLING-ROUTE", "VSOCK-SEQPACKET-EOM"},
             .summary = "the second VM's guest sends 600 SEQPACKET messages of 300 bytes, within the byte credit, to "
                        "the first's, which reads none yet: at most buf_alloc / 576 RW packets reach it (Linux resets "
                        "at the next), and all 600, boundaries kept, once it reads",
             .device = "vsock",
             .features = {vhu::feature::VSOCK_F_SEQPACKET},
             .timeout_ms = 10000,
             .siblings = true) {
  constexpr uint32_t kListenPort = 9610, kPeerPort = 9611;
  constexpr int kMessages = 600;
  constexpr size_t kSize = 300;  // above GOOD_COPY_LEN (128), below which Linux merges a packet
  QemuFrontend qb = started(ctx);
  Ctx& sib = ctx.sibling();
  QemuFrontend qa = started(sib);
  for (QemuFrontend* q : {&qb, &qa})
    if (!vhu::has_bit(q->acked_features(), vhu::feature::VSOCK_F_SEQPACKET))
      skip("VIRTIO_VSOCK_F_SEQPACKET offered but not negotiated");
  auto& b = qb.guest();
  auto& a = qa.guest();
  b.allow_peer(sib.cid());
  a.allow_peer(ctx.cid());

  auto& ca = a.connect_to(ctx.cid(), kPeerPort, kListenPort, vs::kTypeSeqpacket);
  auto req = wait_op(ctx, b, vs::Op::REQUEST, kListenPort);
  check(req.has_value() && req->hdr.type == vs::kTypeSeqpacket,
        fmt::format("the SEQPACKET REQUEST of CID {} to reach CID {} port {}", sib.cid(), ctx.cid(), kListenPort),
        req ? vs::describe(req->hdr) : "nothing in 2 s");
  auto& cb = b.accept(*req);
  cb.reading = false;
  bool ok = a.wait_until([&] { return ca.established || ca.reset; }, std::min(ctx.remaining_ms(), 2000));
  check(ok && ca.established, fmt::format("the RESPONSE of CID {} to reach CID {}", ctx.cid(), sib.cid()),
        ca.reset ? "RST" : "nothing in 2 s");
  b.backlog().clear();

  // The sender, as Linux, sends all it has: 180,000 bytes fit the byte credit.
  const std::string all = payload(kMessages * kSize, 'm');
  int sent = 0;
  expect_within_linux_packet_limit(ctx, b, cb, all, kSize, sent, [&] {
    for (int n = 0; n < 32 && sent < kMessages && !ca.reset; ++n, ++sent)
      a.write_message(ca, std::string_view(all).substr(sent * kSize, kSize));
    a.reclaim_tx();
    std::vector<RxPacket> mine;
    for (auto& p : b.poll_rx())
      if (p.hdr.src_cid == sib.cid() && p.hdr.src_port == kPeerPort && p.hdr.dst_port == kListenPort)
        mine.push_back(std::move(p));
    return mine;
  });
  check(!ca.reset, fmt::format("the sending guest's connection (CID {}) to stay open", sib.cid()), "RST");
  for (VsockGuest* x : {&a, &b})
    expect_no_anomalies(*x, fmt::format("no stray or misaddressed packet on CID {}", x->cid()));
}

}  // namespace
}  // namespace conform
