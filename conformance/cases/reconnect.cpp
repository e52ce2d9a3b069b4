// A front-end that goes away and comes back.
#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;

Frontend& reconnect_or_skip(Ctx& ctx) {
  std::string why;
  Frontend* f = ctx.reconnect(&why);
  if (!f) {
    check(!ctx.backend().crashed(), "the back-end to survive the front-end's disconnect", ctx.backend().status_text());
    skip("back-end does not accept a second connection (reconnection is optional): " + why);
  }
  return *f;
}

CONFORM_CASE(after_disconnect,
             .id = "reconnect.after_disconnect",
             .requirements = {"VU-RECONNECT"},
             .summary = "after the front-end disconnects mid-run, a new connection starts from scratch and works",
             .device = "vsock") {
  {
    QemuFrontend q = started(ctx);
    tx_consume(ctx, q.guest(), 2, "on the first connection");
  }
  reconnect_or_skip(ctx);
  QemuFrontend q2(ctx);
  q2.realize();
  q2.guest_reset();
  q2.start();
  tx_consume(ctx, q2.guest(), 2, "on the second connection");
}

CONFORM_CASE(need_reply_without_get_protocol_features,
             .id = "reconnect.need_reply_without_get_protocol_features",
             .requirements = {"VU-REPLY-ACK", "VU-PF-BEFORE-SET-FEATURES"},
             .summary = "on a new connection, SET_PROTOCOL_FEATURES(REPLY_ACK) without GET_PROTOCOL_FEATURES still enables acks",
             .protocol_features = {pf::REPLY_ACK}) {
  auto& fe = ctx.fe();
  fe.get_features();
  uint64_t p = fe.get_protocol_features();
  ctx.check_needs();
  auto& f2 = reconnect_or_skip(ctx);
  f2.get_features();
  // A front-end that remembers the features (after a migration) skips the query.
  f2.set_protocol_features(p & vhu::protocol_features_in(ctx.spec()));
  f2.send_setter(Message::empty(req(FrontendReq::SET_OWNER)), true);
}

}  // namespace
}  // namespace conform
