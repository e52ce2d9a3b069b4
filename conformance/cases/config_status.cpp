// Device config space, device status and RESET_DEVICE.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

CONFORM_CASE(get_config,
             .id = "config.get_config",
             .requirements = {"VU-GET-CONFIG-SIZE", "VSOCK-CONFIG-CID"},
             .summary = "GET_CONFIG(0, 8) answers the guest CID the back-end was given, (0, 4) and (4, 4) its halves",
             .device = "vsock",
             .protocol_features = {pf::CONFIG}) {
  ctx.handshake();
  auto data = ctx.fe().get_config(0, vs::kConfigSize);
  auto cid = vs::decode_config(data);
  check(cid.ok() && *cid == ctx.cid(), fmt::format("guest_cid {}", ctx.cid()),
        cid.ok() ? std::to_string(*cid) : cid.message());
  // A field read on its own (as a guest driver reads a le64 in two halves)
  // comes from where offset points.
  for (uint32_t off : {0u, 4u}) {
    auto half = ctx.fe().get_config(off, 4);
    uint32_t v = 0;
    std::memcpy(&v, half.data(), std::min<size_t>(half.size(), 4));
    const auto want = static_cast<uint32_t>(ctx.cid() >> (8 * off));
    check(v == want, fmt::format("GET_CONFIG({}, 4) = {:#x}, bytes {}-{} of guest_cid", off, want, off, off + 3),
          fmt::format("{:#x}", v));
  }
}

CONFORM_CASE(config_out_of_bounds,
             .id = "config.out_of_bounds",
             .requirements = {"VU-GET-CONFIG-SIZE", "VU-ERROR-CLOSE"},
             .summary = "GET_CONFIG whose offset + size wraps past 2^32 gets the zero-length error reply (or a close)",
             .protocol_features = {pf::CONFIG}) {
  ctx.handshake();
  std::vector<uint8_t> zeros(8, 0);
  auto m = vhu::make_config_message(req(FrontendReq::GET_CONFIG), vhu::ConfigHeader{0xfffffffcu, 8, 0}, zeros, false);
  auto o = ctx.fe().try_request(m);
  if (o.kind == Outcome::Closed) {
    check(!ctx.backend().crashed(), "the back-end to survive", ctx.backend().status_text());
    ctx.note("the back-end closed the connection (allowed)");
    return;
  }
  check(o.kind == Outcome::Reply, "a GET_CONFIG reply", o.text);
  auto c = vhu::payload_config(o.reply);
  const bool error_reply = o.reply.payload.empty() || (c.ok() && c->hdr.size == 0);
  check(error_reply, "a zero-length payload (the error indication) for offset 0xfffffffc size 8",
        vhu::describe(vhu::Plane::Frontend, o.reply));
  ctx.expect_alive("after an out-of-bounds GET_CONFIG");
}

CONFORM_CASE(set_config_read_only,
             .id = "config.set_config_read_only",
             .requirements = {"VU-SET-CONFIG-READ-ONLY", "VSOCK-CONFIG-CID", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "SET_CONFIG writing guest_cid (read-only) with flags 0, not the live-migration bit, is refused, "
                        "and GET_CONFIG still reads the CID the back-end was given",
             .device = "vsock",
             .protocol_features = {pf::CONFIG}) {
  ctx.handshake();
  const uint64_t other = ctx.cid() + 1000;
  std::vector<uint8_t> data(vs::kConfigSize);
  std::memcpy(data.data(), &other, sizeof other);  // le64, and this runs little-endian only
  auto m = vhu::make_config_message(req(FrontendReq::SET_CONFIG),
                                    vhu::ConfigHeader{0, vs::kConfigSize, vhu::kConfigFlagWritable}, data, false);
  if (expect_refused(ctx, std::move(m), fmt::format("SET_CONFIG guest_cid {} with flags 0 (not a migration)", other)))
    return;
  auto cid = vs::decode_config(ctx.fe().get_config(0, vs::kConfigSize));
  check(cid.ok() && *cid == ctx.cid(), fmt::format("GET_CONFIG to read guest_cid {} still", ctx.cid()),
        cid.ok() ? fmt::format("guest_cid {}: the write went through", *cid) : cid.message());
}

CONFORM_CASE(status_roundtrip,
             .id = "status.roundtrip",
             .requirements = {"VU-SET-STATUS", "VU-GET-STATUS"},
             .summary = "GET_STATUS reads 0 on a fresh device, then what SET_STATUS wrote (FEATURES_OK, as QEMU sends)",
             .protocol_features = {pf::STATUS}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  uint64_t s0 = fe.get_status();
  check(s0 == 0, "status 0 on a new device", fmt::format("{:#x}", s0));
  fe.set_features(minimal_features(fe));
  fe.set_status(vhu::status::FEATURES_OK);
  uint64_t s1 = fe.get_status();
  check(s1 == 0x8, "status 0x8 (FEATURES_OK) after SET_STATUS 0x8", fmt::format("{:#x}", s1));
}

CONFORM_CASE(reset_device,
             .id = "reset.reset_device",
             .requirements = {"VU-RESET-DEVICE", "QEMU10-RESET-KEEPS-MEMORY"},
             .summary = "RESET_DEVICE disables the rings and resets status; re-initialised (memory kept) it works again",
             .device = "vsock",
             .protocol_features = {pf::RESET_DEVICE}) {
  QemuOptions o;
  o.accept_protocol |= vhu::bit(pf::RESET_DEVICE);
  QemuFrontend q = started(ctx, o);
  auto& g = q.guest();
  tx_consume(ctx, g, 2, "before RESET_DEVICE");
  auto& fe = ctx.fe();
  fe.reset_device();
  if (fe.protocol_negotiated(pf::STATUS)) {
    uint64_t s = fe.get_status();
    check(s == 0, "GET_STATUS 0 after RESET_DEVICE", fmt::format("{:#x}", s));
  }
  // Rings are disabled: a queued buffer and a kick do nothing.
  g.send(g.hdr(vs::Op::RST, 43000, 49999));
  g.tx().kick();
  expect_quiet(ctx, "after RESET_DEVICE, with a buffer queued and kicked");
  // QEMU 10 does not re-send the memory table after RESET_DEVICE.
  q.guest_reset();
  q.bases = {0, 0};
  auto& f = ctx.fe();
  f.set_features(q.acked_features());
  for (GuestQueue* qq : {&g.rx(), &g.tx()}) {
    f.set_vring_num(qq->index(), qq->size());
    f.set_vring_base(qq->index(), 0);
    f.set_vring_addr(qq->addr());
    qq->new_kick_fd(true);
    f.set_vring_fd(FrontendReq::SET_VRING_KICK, qq->index(), qq->kick_fd());
    f.set_vring_fd(FrontendReq::SET_VRING_CALL, qq->index(), qq->call_fd());
    f.set_vring_enable(qq->index(), true);
  }
  g.post_rx_buffers();
  g.rx().kick();
  tx_consume(ctx, g, 2, "after RESET_DEVICE and re-initialisation without a new memory table");
}

}  // namespace
}  // namespace conform
