// VHOST_USER_PROTOCOL_F_REPLY_ACK: need_reply on every request.
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;

CONFORM_CASE(every_request,
             .id = "reply_ack.every_request",
             .requirements = {"VU-REPLY-ACK", "VU-REPLY-ACK-VALUE"},
             .summary = "need_reply on every reply-less request of a full start gets exactly one ack 0",
             .protocol_features = {pf::REPLY_ACK}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  fe.set_ack_policy(Frontend::AckPolicy::Always);
  // A whole QEMU-like start with need_reply everywhere; send_setter fails on a
  // missing or non-zero ack, and a second ack would show up as a wrong reply.
  if (ctx.cfg().target.device == "vsock") {
    QemuFrontend q(ctx);
    q.start();
    q.stop();
  } else {
    uint64_t f = minimal_features(fe);
    fe.set_features(f);
    fe.set_mem_table(ctx.ram().regions(), ctx.ram().dup_fds());
    GuestQueue q(ctx.ram(), 0, 64, false, 0);
    fe.set_vring_num(0, 64);
    fe.set_vring_base(0, 0);
    fe.set_vring_addr(q.addr());
    fe.set_vring_fd(FrontendReq::SET_VRING_CALL, 0, q.call_fd());
    fe.set_vring_fd(FrontendReq::SET_VRING_ERR, 0, q.err_fd());
    fe.set_vring_fd(FrontendReq::SET_VRING_KICK, 0, q.kick_fd());
    fe.set_vring_enable(0, true);
    fe.set_vring_enable(0, false);
    fe.get_vring_base(0);
  }
  if (auto m = fe.unsolicited(50)) fail("no further message after the last ack", vhu::describe(vhu::Plane::Frontend, *m));
}

CONFORM_CASE(explicit_reply_unchanged,
             .id = "reply_ack.explicit_reply_unchanged",
             .requirements = {"VU-REPLY-ACK-EXISTING"},
             .summary = "need_reply on a request with its own reply brings exactly that reply, no extra ack",
             .protocol_features = {pf::REPLY_ACK}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  for (auto r : {FrontendReq::GET_FEATURES, FrontendReq::GET_PROTOCOL_FEATURES}) {
    auto o = fe.try_request(Message::empty(req(r), true));
    check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
          fmt::format("the {} reply", vhu::request_name(r)), o.text);
    check(o.u64 == (r == FrontendReq::GET_FEATURES ? *fe.offered_features : *fe.offered_protocol),
          fmt::format("the {} value, not an ack", vhu::request_name(r)), o.text);
    if (auto m = fe.unsolicited(50))
      fail(fmt::format("nothing after the {} reply", vhu::request_name(r)), vhu::describe(vhu::Plane::Frontend, *m));
  }
}

}  // namespace
}  // namespace conform
