// Handshake and message framing, valid for any device type.
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;

CONFORM_CASE(reply_header,
             .id = "handshake.reply_header",
             .requirements = {"VU-HDR-VERSION", "VU-HDR-REPLY-FLAG", "VU-REPLY-REQUIRED", "QEMU-REPLY-ECHO"},
             .summary = "replies carry version 1, the reply flag, the request id echoed and a u64 payload") {
  auto& fe = ctx.fe();
  // expect_reply checks version, reply flag, echo and fds on every reply.
  fe.get_features();
  if (vhu::has_bit(*fe.offered_features, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES)) fe.get_protocol_features();
}

CONFORM_CASE(offers_protocol_features,
             .id = "handshake.offers_protocol_features",
             .requirements = {"QEMU-NEEDS-PROTOCOL-FEATURES", "VU-GET-FEATURES"},
             .summary = "GET_FEATURES offers VHOST_USER_F_PROTOCOL_FEATURES (bit 30)") {
  uint64_t f = ctx.fe().get_features();
  check(vhu::has_bit(f, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES),
        "VHOST_USER_F_PROTOCOL_FEATURES (bit 30) offered", "features " + vf_text(f, ctx.cfg().target.device == "vsock"));
}

CONFORM_CASE(protocol_features_before_set_features,
             .id = "handshake.protocol_features_before_set_features",
             .requirements = {"VU-PF-BEFORE-SET-FEATURES", "VU-REPLY-ACK"},
             .summary = "GET/SET_PROTOCOL_FEATURES work before SET_FEATURES and take effect at once (QEMU's order)") {
  auto& fe = ctx.fe();
  uint64_t f = fe.get_features();
  if (!vhu::has_bit(f, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES))
    skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  uint64_t p = fe.get_protocol_features();
  fe.set_protocol_features(p & vhu::protocol_features_in(ctx.spec()));
  // Asked again before any SET_FEATURES: same answer.
  uint64_t p2 = fe.get_protocol_features();
  check(p2 == p, "GET_PROTOCOL_FEATURES to answer the same before and after SET_PROTOCOL_FEATURES",
        fmt::format("{} then {}", pf_text(p), pf_text(p2)));
  if (fe.reply_ack()) {
    // REPLY_ACK is in force from SET_PROTOCOL_FEATURES on, SET_FEATURES or not.
    fe.send_setter(Message::empty(req(FrontendReq::SET_OWNER)), true);
  } else {
    fe.set_owner();
    ctx.note("REPLY_ACK not offered: only the order was checked");
  }
  fe.get_features();
}

CONFORM_CASE(set_owner,
             .id = "handshake.set_owner",
             .requirements = {"VU-SET-OWNER", "VU-REPLY-ACK"},
             .summary = "SET_OWNER on a new connection is accepted (acked 0 with need_reply)") {
  auto& fe = ctx.fe();
  uint64_t f = fe.get_features();
  if (vhu::has_bit(f, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES))
    fe.set_protocol_features(fe.get_protocol_features() & vhu::protocol_features_in(ctx.spec()));
  // need_reply whenever REPLY_ACK allows it, so acceptance is visible.
  fe.send_setter(Message::empty(req(FrontendReq::SET_OWNER)), fe.reply_ack());
  ctx.expect_alive("after SET_OWNER");
}

CONFORM_CASE(unknown_request,
             .id = "handshake.unknown_request",
             .requirements = {"VU-REPLY-REQUIRED", "VU-ERROR-CLOSE"},
             .summary = "unknown request ids without need_reply get no reply and the back-end survives") {
  auto& fe = ctx.fe();
  fe.get_features();
  for (uint32_t id : {46u, 99u, 0x7fffffffu}) {
    auto s = fe.try_send(Message::empty(id));
    if (!s) {
      check(!ctx.backend().crashed(), "the back-end to survive an unknown request", ctx.backend().status_text());
      ctx.note(fmt::format("the back-end closed the connection on unknown request {} (allowed)", id));
      return;
    }
    // The next reply must be the GET_FEATURES one: no reply to the unknown id.
    auto o = fe.try_request(Message::empty(req(FrontendReq::GET_FEATURES)));
    if (o.kind == Outcome::Closed) {
      check(!ctx.backend().crashed(), "the back-end to survive an unknown request", ctx.backend().status_text());
      ctx.note(fmt::format("the back-end closed the connection on unknown request {} (allowed)", id));
      return;
    }
    check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
          fmt::format("no reply to unknown request {}, then the GET_FEATURES reply", id), o.text);
  }
}

CONFORM_CASE(unknown_request_need_reply,
             .id = "handshake.unknown_request_need_reply",
             .requirements = {"VU-REPLY-ACK", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "an unknown request with need_reply is refused with a non-zero ack (or a close)",
             .protocol_features = {pf::REPLY_ACK}) {
  ctx.handshake();
  for (uint32_t id : {46u, 1000u}) {
    if (expect_refused(ctx, Message::empty(id), fmt::format("unknown request {}", id))) return;
  }
}

}  // namespace
}  // namespace conform
