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

}  // namespace
}  // namespace conform
