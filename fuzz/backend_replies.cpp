// Fuzz target `backend_replies`: the conformance runner's side of the
// socket. vhost-user-conform talks to back-ends it must not trust (that is
// what it tests), so whatever one writes must come back as a verdict, never
// as a crash of the runner: libvhu's Channel reads it on either plane (the
// main socket, and the back-end request channel of BACKEND_REQ), the
// runner's Frontend turns it into replies or case failures, and its message
// log decodes it for the report with vhu::describe().
//
// Input: records of u8 op and op-specific fields (fuzz/README.md,
// "backend_replies"); the back-end's bytes are written before the runner
// reads, so every read finds what the input wrote and never waits:
//   0 write:    u8 fds, u16 len, bytes: written by the back-end on the main
//               socket, with fds % 10 eventfds on the first byte (more than
//               a message may carry is part of the game);
//   1 request:  u8 which, u32 arg: one of the runner's typed requests
//               (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
//               GET_MAX_MEM_SLOTS, GET_VRING_BASE, GET_CONFIG, GET_STATUS,
//               SET_FEATURES, SET_VRING_ENABLE), reading its reply;
//   2 try:      u32 request id, u32 flags: try_request() with any id, the
//               form the robustness cases use;
//   3 unsolicited: what the runner reads when it expects nothing;
//   4 backend:  u8 fds, u16 len, bytes: a back-end request on the BACKEND_REQ
//               channel, read with the back-end plane's table;
//   5 negotiate: u64 protocol features the runner believes acked (REPLY_ACK
//               makes setters wait for an ack);
//   6 hang up:  the back-end closes the main socket.
//
// Invariants: nothing but a CaseFailure leaves the runner, and every failure
// says what was expected and what came; every message Channel returns has a
// payload of the size its header gives and at most kMaxFds fds; the message
// log renders; no fd is left open after the input.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "failure.h"
#include "frontend.h"
#include "frontend_fds.h"
#include "fuzz_input.h"
#include "msglog.h"
#include "vhu/channel.h"
#include "vhu/messages.h"
#include "vhu/scm_rights.h"
#include "vhu/vsock.h"

namespace {

using vhu::FrontendReq;
using vhu::fuzz::Input;

constexpr size_t kMaxFdsWritten = 10;
constexpr int kMaxRecords = 64;

// Reads and discards what the runner sent, closing the fds that came with it.
void drain(int fd) {
  uint8_t buf[4096];
  for (;;) {
    std::vector<vhu::UniqueFd> fds;
    if (vhu::recv_with_fds(fd, buf, fds, MSG_DONTWAIT) <= 0) return;
  }
}

void check_message(vhu::Plane plane, const vhu::Message& m) {
  VHU_FUZZ_CHECK(m.payload.size() == m.hdr.size);
  VHU_FUZZ_CHECK(m.fds.size() <= vhu::kMaxFds);
  VHU_FUZZ_CHECK(!vhu::describe(plane, m).empty());
}

class Harness {
 public:
  Harness() {
    auto main = vhu::socket_pair();
    auto req = vhu::socket_pair();
    VHU_FUZZ_CHECK(main.ok() && req.ok());
    backend_ = std::move(main->second);
    fe_.emplace(std::move(main->first), log_, conform::Clock::now() + std::chrono::seconds(10));
    // Everything the input writes is in the socket before the runner reads.
    fe_->set_reply_timeout_ms(0);
    backend_req_ = vhu::Channel(std::move(req->first), vhu::Plane::Backend);
    backend_req_peer_ = std::move(req->second);
  }

  void step(Input& in) {
    const auto op = in.take<uint8_t>();
    switch (op % 7) {
      case 0: write(backend_.get(), in); return;
      case 1: {
        // Read in order: the order of evaluation of call arguments is unspecified.
        const auto which = in.take<uint8_t>();
        const auto arg = in.take<uint32_t>();
        runner([&] { typed(which, arg); });
        break;
      }
      case 2: {
        const auto id = in.take<uint32_t>();
        const auto flags = in.take<uint32_t>();
        runner([&] {
          vhu::Message m = vhu::Message::empty(id);
          m.hdr.flags = (flags & ~(vhu::kFlagReply | vhu::kFlagVersionMask)) | vhu::kVersion;
          const conform::Outcome o = fe_->try_request(m, 0);
          VHU_FUZZ_CHECK(!o.text.empty());
          if (o.kind == conform::Outcome::Reply) check_message(vhu::Plane::Frontend, o.reply);
        });
        break;
      }
      case 3:
        runner([&] {
          if (auto m = fe_->unsolicited(0)) check_message(vhu::Plane::Frontend, *m);
        });
        break;
      case 4: {
        write(backend_req_peer_.get(), in);
        auto m = backend_req_.recv(0);
        if (m) check_message(vhu::Plane::Backend, *m);
        else VHU_FUZZ_CHECK(!m.message().empty());
        break;
      }
      case 5: fe_->acked_protocol = in.take<uint64_t>(); break;
      case 6: backend_.reset(); break;
    }
    drain(backend_.get());
    // The report's message trace: whatever came is decoded there too.
    const std::string trace = log_.render();
    VHU_FUZZ_CHECK(log_.count(conform::Dir::ToBackend) == 0 || !trace.empty());
  }

 private:
  // The back-end writes: bytes with fds on the first one (none without bytes).
  void write(int fd, Input& in) {
    const size_t nfds = in.take<uint8_t>() % kMaxFdsWritten;
    const auto bytes = in.bytes(in.take<uint16_t>() % 8192);
    if (fd < 0 || bytes.empty()) return;
    std::vector<vhu::UniqueFd> fds;
    std::vector<int> raw;
    for (size_t i = 0; i < nfds; ++i) {
      fds.push_back(vhu::fuzz::eventfds().take(false));
      raw.push_back(fds.back().get());
    }
    // A full socket is the back-end's problem, not the runner's: it drops the rest.
    (void)!vhu::send_with_fds(fd, bytes, raw, MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  // A verdict is the runner's normal way out; it must be one a back-end
  // author can act on.
  template <class Fn>
  void runner(Fn fn) {
    if (!fe_->connected()) return;
    try {
      fn();
    } catch (const conform::CaseFailure& f) {
      VHU_FUZZ_CHECK(!f.expected.empty() && !f.got.empty());
    }
  }

  void typed(uint8_t which, uint32_t arg) {
    conform::Frontend& f = *fe_;
    switch (which % 9) {
      case 0: (void)f.get_features(); break;
      case 1: (void)f.get_protocol_features(); break;
      case 2: (void)f.get_queue_num(); break;
      case 3: (void)f.get_max_mem_slots(); break;
      case 4: (void)f.get_vring_base(arg % 4); break;
      case 5: {
        const auto c = f.get_config(arg & 0xff, (arg >> 8) % 300);
        VHU_FUZZ_CHECK(c.size() == (arg >> 8) % 300);
        // The vsock cases read guest_cid out of it.
        if (auto cid = vhu::vsock::decode_config(c); !cid) VHU_FUZZ_CHECK(c.size() < vhu::vsock::kConfigSize);
        break;
      }
      case 6: (void)f.get_status(); break;
      case 7:
        f.set_ack_policy(conform::Frontend::AckPolicy::Always);
        f.set_features(uint64_t{arg} << 32 | arg);
        break;
      case 8:
        f.set_ack_policy(conform::Frontend::AckPolicy::Always);
        f.set_vring_enable(arg % 4, (arg >> 8) & 1);
        break;
    }
  }

  conform::MessageLog log_;
  vhu::UniqueFd backend_;
  std::optional<conform::Frontend> fe_;
  vhu::Channel backend_req_;
  vhu::UniqueFd backend_req_peer_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::new_input();
  const vhu::fuzz::FdLeakCheck leaks;
  {
    Harness h;
    Input in(data, size);
    for (int i = 0; !in.empty() && i < kMaxRecords; ++i) h.step(in);
  }
  leaks.verify();
  return 0;
}
