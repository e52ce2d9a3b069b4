// Fuzz target `vhost_user_messages`: a sequence of vhost-user messages (the
// framing of message_framing.h, documented in fuzz/README.md) fed to the
// reference back-end's message handling in-process, with the fds each message
// needs synthesised from the request table's FdRule: memfds for memory
// regions and the log, eventfds for kick/call/err, pipes for
// SET_DEVICE_STATE_FD. Harness actions kick rings, write guest memory and feed
// the device-state pipe, so the datapath behind the messages is reached too.
//
// Invariants, checked after every message:
//  - a need_reply request is answered exactly once unless the back-end closed
//    the connection; any other request at most once, and only when the
//    request has a reply of its own;
//  - every reply has the reply flag and version 1, no need_reply, echoes the
//    request id, a size field equal to its payload, a payload of the shape
//    the request table gives (or a u64 refusal), and only the fds it may carry;
//  - a deferred CHECK_DEVICE_STATE reply arrives once the pipe is done with;
// and after the whole input: no fd is left open (the back-end, its event loop
// and the harness are gone, so every fd they opened must be closed again).
#include <csignal>
#include <cstdlib>
#include <vector>

#include "backend.h"
#include "backend_process.h"
#include "frontend_fds.h"
#include "fuzz_input.h"
#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"

namespace {

namespace fr = vhu::fuzz::framing;
using vhu::FrontendReq;

struct Sink : vsockref::ReplySink {
  std::vector<vhu::Message> got;
  void send(vhu::Message&& m) override { got.push_back(std::move(m)); }
};

class Harness {
 public:
  Harness() : backend_(loop_.get(), sink_, vsockref::BackendOptions{}) {}

  // Runs one record: a message or an action, then a round of the event loop.
  void record(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    if (h.request >= fr::kActionBase) {
      action(h, payload);
    } else {
      message(h, payload);
    }
    service();
    backend_.poll_once();
    service();
  }

 private:
  void message(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    vhu::Message m;
    m.hdr.request = h.request;
    m.hdr.flags = h.flags;
    m.set_payload_bytes(payload);
    const size_t nfds = vhu::fuzz::fd_count(h, m);
    for (size_t i = 0; i < nfds; ++i) m.fds.push_back(fds_.make(m, i, h.aux));

    const vhu::Message req{m.hdr, m.payload, {}};
    const size_t before = sink_.got.size();
    auto disp = backend_.handle(std::move(m));
    if (disp == vsockref::Disposition::Wait) {
      VHU_FUZZ_CHECK(sink_.got.size() == before);  // deferred means no reply yet
      finish_deferred();
      disp = vsockref::Disposition::Continue;
    }
    const size_t replies = sink_.got.size() - before;
    const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, req.hdr.request);
    if (disp == vsockref::Disposition::Close) {
      VHU_FUZZ_CHECK(replies <= 1);
      backend_.disconnect();  // what the server does when it drops the connection
    } else if (req.need_reply()) {
      VHU_FUZZ_CHECK(replies == 1);
    } else {
      VHU_FUZZ_CHECK(replies <= 1);
      if (replies == 1) VHU_FUZZ_CHECK(info && info->has_own_reply());
    }
    for (size_t i = before; i < sink_.got.size(); ++i) check_reply(req, info, sink_.got[i]);
    sink_.got.clear();
  }

  static void check_reply(const vhu::Message& req, const vhu::RequestInfo* info, const vhu::Message& r) {
    VHU_FUZZ_CHECK(r.is_reply() && !r.need_reply());
    VHU_FUZZ_CHECK((r.hdr.flags & vhu::kFlagVersionMask) == vhu::kVersion);
    VHU_FUZZ_CHECK(r.hdr.request == req.hdr.request);
    VHU_FUZZ_CHECK(r.hdr.size == r.payload.size());
    // Never an fd the reply does not take; a refusal may leave out the one it does.
    const bool may_carry_one = info && (info->reply_fds == vhu::FdRule::One || info->reply_fds == vhu::FdRule::OptionalOne);
    VHU_FUZZ_CHECK(r.fds.empty() || (may_carry_one && r.fds.size() == 1));
    // GET_VRING_BASE names the ring it answers for. (GET_VRING_BASE_SKIP_DRAIN
    // is not supported: its 8-byte answer is a u64 refusal.)
    if (req.hdr.request == static_cast<uint32_t>(FrontendReq::GET_VRING_BASE) &&
        req.payload.size() == sizeof(vhu::VringState)) {
      auto want = vhu::payload_vring_state(vhu::Plane::Frontend, req);
      auto got = vhu::payload_vring_state(vhu::Plane::Frontend, r);
      VHU_FUZZ_CHECK(want.ok() && got.ok() && want->index == got->index);
      return;
    }
    // A u64 answers any request: REPLY_ACK, or a refusal of one not supported.
    if (r.payload.size() == sizeof(uint64_t)) return;
    VHU_FUZZ_CHECK(info != nullptr);
    switch (info->reply) {
      case vhu::PayloadKind::Config:
        // An empty payload is the spec's way to say GET_CONFIG failed.
        VHU_FUZZ_CHECK(r.payload.empty() || vhu::payload_config(r).ok());
        break;
      default:
        VHU_FUZZ_CHECK(false);
    }
  }

  // The front-end waits for the deferred CHECK_DEVICE_STATE reply; a real one
  // closes its end of the pipe once the state is written, so we do that if
  // the input did not.
  void finish_deferred() {
    for (int round = 0; round < 64 && backend_.waiting(); ++round) {
      if (round == 2) fds_.close_transfer();
      service();
      backend_.poll_once();
    }
    VHU_FUZZ_CHECK(!backend_.waiting());
  }

  void action(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    vhu::fuzz::Input in(payload.data(), payload.size());
    if (fds_.action(h, in)) return;
    switch (h.request) {
      case fr::kActionDisconnect:
        backend_.disconnect();
        break;
      default:
        break;
    }
  }

  // What the front-end does meanwhile: drain the pipe of a save.
  void service() { fds_.drain_save(); }

  vhu::fuzz::ProcessLoop loop_;
  Sink sink_;
  // Destroyed before the fds below, as a front-end outlives its back-end session.
  vsockref::Backend backend_;
  vhu::fuzz::FrontendFds fds_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vhu::fuzz::init_backend_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::run_records<Harness>(data, size);
  return 0;
}
