// Fuzz target `vhost_user_socket`: the inputs of `vhost_user_messages` (the
// same framing, fuzz/README.md) sent as a front-end sends them, over a Unix
// socket with SCM_RIGHTS, to a whole vsockref::Vm listening on a socket path
// as vhost-user-vsock-ref does: its MessageReader (byte stream reassembly, fd
// collection, size limits), its reply queue, session teardown and restart,
// and the host side (HostListener and the CONNECT handshake on uds-path).
// `vhost_user_messages` calls Backend::handle() directly and is several times
// faster; this target is for the layers that one skips. Replies are read
// back with libvhu's Channel, the runner's own reader, and every request and
// reply is printed with vhu::describe() as the runner and a debug-level
// back-end do, so the printers meet hostile payloads.
//
// Two actions beyond those of `vhost_user_messages` (which has no socket to
// put raw bytes on, and no host side):
//   0xffff0005 raw:  (fuzz_framing.h) the payload bytes go onto the socket as
//                    they are, with fds - 1 eventfds (a header cut short, a
//                    size over the limit, a message split across writes); the
//                    stream may be out of step from then on, so replies are
//                    only checked for their framing until the session ends;
//   0xffff0006 host: a host program connects to uds-path and writes the
//                    payload ("CONNECT <port>\n" and stream bytes, or not);
//                    flags bit 0 closes it again at once. The last 8 stay open.
//
// Invariants: every reply is framed as the reply flag, version 1, no
// need_reply, at most the fds its request's reply takes (Channel::recv
// refuses the rest); while the stream is in step, a need_reply request is
// answered exactly once unless the back-end hung up, any other at most once
// and only when the request has a reply of its own, each reply echoes its
// request, and an action draws no reply; after a hang-up the Vm has dropped
// the session and accepts the next front-end. After the input: no fd is left
// open.
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "backend_process.h"
#include "frontend_fds.h"
#include "fuzz_input.h"
#include "router.h"
#include "vhu/channel.h"
#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"
#include "vm.h"

namespace {

namespace fr = vhu::fuzz::framing;
using vhu::FrontendReq;

constexpr uint32_t kActionHost = fr::kActionBase + 6;
constexpr size_t kMaxHostPeers = 8;

// Socket paths of their own per process: fuzzing jobs may run side by side.
std::string socket_path(const char* what) {
  return "/tmp/vhu-fuzz-socket-" + std::to_string(::getpid()) + "." + what;
}
const std::string& vhost_user_path() {
  static const std::string path = socket_path("sock");
  return path;
}
const std::string& uds_path() {
  static const std::string path = socket_path("uds");
  return path;
}

vsockref::VmConfig config() {
  vsockref::VmConfig c;
  c.guest_cid = 3;
  c.socket = vhost_user_path();
  c.uds_path = uds_path();
  c.tx_buffer_size = 4096;  // credit and backpressure within short inputs
  c.queue_size = 256;
  return c;
}

class Harness {
 public:
  Harness() : vm_(loop_.get(), config(), &router_) {
    VHU_FUZZ_CHECK(vm_.start().ok());
    new_session();
  }

  void record(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    if (h.request >= fr::kActionBase) {
      action(h, payload);
    } else {
      message(h, payload);
    }
  }

 private:
  // The front-end connects to the vhost-user socket, as QEMU does; the
  // back-end accepts one front-end at a time.
  void new_session() {
    auto c = vhu::connect_unix(vhost_user_path());
    VHU_FUZZ_CHECK(c.ok());
    chan_ = vhu::Channel(std::move(*c), vhu::Plane::Frontend);
    in_step_ = true;
    settle();
    VHU_FUZZ_CHECK(vm_.connected());
  }

  // Runs the loop until it has nothing left to do now (bounded: a ring the
  // device polls keeps it busy).
  void settle() {
    for (int round = 0; round < 64; ++round) {
      fds_.drain_save();
      if (loop_.get().run_once(0) == 0) break;
    }
    fds_.drain_save();
  }

  void message(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    vhu::Message m;
    m.hdr.request = h.request;
    m.hdr.flags = h.flags;
    m.set_payload_bytes(payload);
    const size_t nfds = vhu::fuzz::fd_count(h, m);
    for (size_t i = 0; i < nfds; ++i) m.fds.push_back(fds_.make(m, i, h.aux));
    (void)vhu::describe(vhu::Plane::Frontend, m);
    (void)vhu::check_fd_count(vhu::Plane::Frontend, m);  // the runner's own check of what it sends
    if (!chan_.send(m)) {
      // The back-end hung up on an earlier message: a front-end reconnects.
      hung_up();
      return;
    }
    m.fds.clear();  // the back-end has its own copies now
    settle();
    std::vector<vhu::Message> replies;
    bool closed = collect(replies);
    const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, m.hdr.request);
    const bool expects = m.need_reply() || (info && info->has_own_reply());
    if (!closed && replies.empty() && expects && fds_.transfer_open()) {
      // A deferred CHECK_DEVICE_STATE: the front-end closes its end of the
      // pipe once the state is written, so we do that if the input did not.
      fds_.close_transfer();
      settle();
      closed = collect(replies);
    }
    if (in_step_) {
      if (m.need_reply() && !closed) VHU_FUZZ_CHECK(replies.size() == 1);
      VHU_FUZZ_CHECK(replies.size() <= 1);
      if (!replies.empty() && !m.need_reply()) VHU_FUZZ_CHECK(info && info->has_own_reply());
      for (const vhu::Message& r : replies) VHU_FUZZ_CHECK(r.hdr.request == m.hdr.request);
    }
    if (closed) hung_up();
  }

  // Reads every reply that has arrived; true when the back-end hung up.
  bool collect(std::vector<vhu::Message>& out) {
    for (;;) {
      auto r = chan_.recv(0);
      if (!r) {
        if (r.error().kind == vhu::ErrorKind::Timeout) return false;
        if (r.error().kind == vhu::ErrorKind::Closed) return true;
        // Desync, Invalid (an fd a reply does not take) or Io: a reply the
        // runner could not read.
        std::fprintf(stderr, "unreadable reply: %s\n", r.message().c_str());
        VHU_FUZZ_CHECK(!"reply framed as the spec says");
      }
      (void)vhu::describe(vhu::Plane::Frontend, *r);
      VHU_FUZZ_CHECK(r->is_reply() && !r->need_reply());
      VHU_FUZZ_CHECK((r->hdr.flags & vhu::kFlagVersionMask) == vhu::kVersion);
      out.push_back(std::move(*r));
    }
  }

  void hung_up() {
    chan_.close();
    settle();
    VHU_FUZZ_CHECK(!vm_.connected());
    new_session();
  }

  void action(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    vhu::fuzz::Input in(payload.data(), payload.size());
    if (!fds_.action(h, in)) {
      switch (h.request) {
        case fr::kActionDisconnect:
          hung_up();
          return;
        case fr::kActionRaw: {
          std::vector<vhu::UniqueFd> owned;
          std::vector<int> fds;
          for (size_t i = 0, n = vhu::fuzz::named_fd_count(h); i < n; ++i) {
            owned.push_back(vhu::fuzz::eventfds().take(false));
            fds.push_back(owned.back().get());
          }
          in_step_ = false;
          if (!chan_.send_raw(in.rest(), fds)) {
            hung_up();
            return;
          }
          break;
        }
        case kActionHost: {
          auto c = vhu::connect_unix(uds_path());
          VHU_FUZZ_CHECK(c.ok());  // the backlog (128) outlasts any input's connections
          const auto data = in.rest();
          if (!data.empty()) (void)!::send(c->get(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (!(h.flags & 1)) {
            hosts_.push_back(std::move(*c));
            if (hosts_.size() > kMaxHostPeers) hosts_.pop_front();
          }
          break;
        }
        default:
          break;
      }
    }
    settle();
    std::vector<vhu::Message> replies;
    // Replies here answer nothing we sent since the last message: only a
    // stream out of step may produce them.
    const bool closed = collect(replies);
    if (in_step_) VHU_FUZZ_CHECK(replies.empty());
    if (closed) hung_up();
  }

  vhu::fuzz::ProcessLoop loop_;
  vsockref::Router router_;
  // After the loop and router it uses, so destroyed before them.
  vsockref::Vm vm_;
  vhu::Channel chan_;
  bool in_step_ = true;
  vhu::fuzz::FrontendFds fds_;
  std::deque<vhu::UniqueFd> hosts_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vhu::fuzz::init_backend_process();
  ::unlink(vhost_user_path().c_str());  // left by a run that crashed
  ::unlink(uds_path().c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::run_records<Harness>(data, size);
  return 0;
}
