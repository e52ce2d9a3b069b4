// Fuzz target `vhost_user_socket`: the inputs of `vhost_user_messages` (the
// same framing, fuzz/README.md) sent as a front-end sends them, over a Unix
// socket with SCM_RIGHTS, to a whole vsockref::Vm: its MessageReader (byte
// stream reassembly, fd collection, size limits), its reply queue, session
// teardown and restart, and the host side (HostListener and the CONNECT
// handshake on uds-path). `vhost_user_messages` calls Backend::handle()
// directly and is several times faster; this target is for the layers that
// one skips. Replies are read back with libvhu's Channel, the runner's own
// reader, and every request and reply is printed with vhu::describe() as the
// runner and a debug-level back-end do, so the printers meet hostile payloads.
//
// Two actions of its own, beyond those of `vhost_user_messages`:
//   0xffff0005 raw:  the payload bytes go onto the socket as they are, with
//                    fds - 1 eventfds (a header cut short, a size over the
//                    limit, a message split across writes); the stream may be
//                    out of step from then on, so replies are only checked
//                    for their framing until the session ends;
//   0xffff0006 host: a host program connects to uds-path and writes the
//                    payload ("CONNECT <port>\n" and stream bytes, or not);
//                    flags bit 0 closes it again at once. The last 8 stay open.
//
// Invariants: every reply is framed as the reply flag, version 1, no
// need_reply, at most the fds its request's reply takes (Channel::recv
// refuses the rest); while the stream is in step, a need_reply request is
// answered exactly once unless the back-end hung up, any other at most once
// and only when the request has a reply of its own, and each reply echoes
// its request. After the input: no fd is left open.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <bitset>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "fuzz_input.h"
#include "log.h"
#include "router.h"
#include "vhu/channel.h"
#include "vhu/fuzz_fds.h"
#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"
#include "vm.h"

namespace {

namespace fr = vhu::fuzz::framing;
using vhu::FrontendReq;

constexpr uint32_t kActionRaw = fr::kActionBase + 5;
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
  Harness() : vm_(loop_, config(), &router_) {
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
      drain_save_pipe();
      if (loop_.run_once(0) == 0) break;
    }
    drain_save_pipe();
  }

  void drain_save_pipe() {
    if (!state_read_) return;
    uint8_t buf[4096];
    while (::read(state_read_.get(), buf, sizeof buf) > 0) {
    }
  }

  vhu::UniqueFd make_memfd(uint64_t bytes) {
    vhu::UniqueFd fd(::memfd_create("vhu-fuzz-region", MFD_CLOEXEC));
    VHU_FUZZ_CHECK(fd.valid());
    VHU_FUZZ_CHECK(::ftruncate(fd.get(), static_cast<off_t>(bytes)) == 0);
    regions_.emplace_back(::dup(fd.get()), bytes);
    if (regions_.size() > vhu::fuzz::kPokeRegions) regions_.pop_front();
    return fd;
  }

  static vhu::UniqueFd make_eventfd(bool signalled) {
    vhu::UniqueFd fd(::eventfd(signalled ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK));
    VHU_FUZZ_CHECK(fd.valid());
    return fd;
  }

  vhu::UniqueFd make_fd(const vhu::Message& m, size_t i, bool signalled) {
    const vhu::fuzz::FdPlan p = vhu::fuzz::plan_fd(m, i);
    switch (p.kind) {
      case vhu::fuzz::FdKind::Memfd:
        return make_memfd(p.memfd_bytes);
      case vhu::fuzz::FdKind::StatePipe: {
        int fds[2];
        VHU_FUZZ_CHECK(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        state_write_.reset();
        state_read_.reset();
        // Load: the back-end reads, we write. Anything else: it writes, we drain.
        if (p.load) {
          state_write_ = vhu::UniqueFd(fds[1]);
          return vhu::UniqueFd(fds[0]);
        }
        state_read_ = vhu::UniqueFd(fds[0]);
        return vhu::UniqueFd(fds[1]);
      }
      case vhu::fuzz::FdKind::Eventfd:
        break;
    }
    vhu::UniqueFd fd = make_eventfd(signalled);
    if (p.kick_ring) kicks_[*p.kick_ring] = vhu::UniqueFd(::dup(fd.get()));
    return fd;
  }

  void message(const fr::RecordHeader& h, std::span<const uint8_t> payload) {
    vhu::Message m;
    m.hdr.request = h.request;
    m.hdr.flags = h.flags;
    m.set_payload_bytes(payload);
    const size_t nfds = vhu::fuzz::fd_count(h, m);
    for (size_t i = 0; i < nfds; ++i) m.fds.push_back(make_fd(m, i, (h.aux & fr::kAuxSignal) != 0));
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
    if (!closed && replies.empty() && expects && (state_write_ || state_read_)) {
      // A deferred CHECK_DEVICE_STATE: the front-end closes its end of the
      // pipe once the state is written, so we do that if the input did not.
      state_write_.reset();
      state_read_.reset();
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
    switch (h.request) {
      case fr::kActionKick: {
        auto it = kicks_.find(static_cast<uint8_t>(in.take<uint32_t>()));
        if (it != kicks_.end()) {
          const uint64_t one = 1;
          (void)!::write(it->second.get(), &one, sizeof one);
        }
        break;
      }
      case fr::kActionPoke: {
        if (regions_.empty()) break;
        auto& [fd, bytes] = regions_[h.flags % regions_.size()];
        const uint64_t off = in.take<uint64_t>() % bytes;
        const auto data = in.rest();
        const size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), bytes - off));
        if (n) VHU_FUZZ_CHECK(::pwrite(fd.get(), data.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
        break;
      }
      case fr::kActionStatePipe: {
        if (!state_write_) break;
        const auto data = in.rest();
        (void)!::write(state_write_.get(), data.data(), data.size());
        if (h.flags & 1) state_write_.reset();
        break;
      }
      case fr::kActionDisconnect:
        hung_up();
        return;
      case kActionRaw: {
        std::vector<vhu::UniqueFd> owned;
        std::vector<int> fds;
        for (size_t i = 0; h.fds && i < std::min<size_t>(h.fds - 1u, vhu::kMaxFds); ++i) {
          owned.push_back(make_eventfd(false));
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
    settle();
    std::vector<vhu::Message> replies;
    // Replies here answer nothing we sent since the last message: only a
    // stream out of step may produce them.
    const bool closed = collect(replies);
    if (in_step_) VHU_FUZZ_CHECK(replies.empty());
    if (closed) hung_up();
  }

  vsockref::EventLoop loop_;
  vsockref::Router router_;
  // After the loop and router it uses, so destroyed before them.
  vsockref::Vm vm_;
  vhu::Channel chan_;
  bool in_step_ = true;
  std::deque<std::pair<vhu::UniqueFd, uint64_t>> regions_;
  std::map<uint8_t, vhu::UniqueFd> kicks_;
  vhu::UniqueFd state_write_, state_read_;
  std::deque<vhu::UniqueFd> hosts_;
};

// The fd-leak check of vhost_user_messages.cpp: one poll() over a window of
// fds from the lowest free one (a closed fd comes back POLLNVAL).
constexpr int kFdWindow = 128;
std::bitset<kFdWindow> open_fds(int first) {
  std::array<pollfd, kFdWindow> p{};
  for (int i = 0; i < kFdWindow; ++i) p[i].fd = first + i;
  VHU_FUZZ_CHECK(::poll(p.data(), p.size(), 0) >= 0);
  std::bitset<kFdWindow> open;
  for (int i = 0; i < kFdWindow; ++i) open[i] = !(p[i].revents & POLLNVAL);
  return open;
}

int lowest_free_fd() {
  const int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
  VHU_FUZZ_CHECK(fd >= 0);
  ::close(fd);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vsockref::LogLevel level = vsockref::LogLevel::Off;
  if (const char* env = std::getenv("VHU_FUZZ_LOG")) (void)vsockref::parse_log_level(env, level);
  vsockref::set_log_level(level);
  std::signal(SIGPIPE, SIG_IGN);  // as vhost-user-vsock-ref's main() does
  ::unlink(vhost_user_path().c_str());  // left by a run that crashed
  ::unlink(uds_path().c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool initialised = (LLVMFuzzerInitialize(nullptr, nullptr), true);
  (void)initialised;
  const int first_free = lowest_free_fd();
  const std::bitset<kFdWindow> preopen = open_fds(first_free);
  {
    Harness h;
    vhu::fuzz::Input in(data, size);
    while (in.remaining() >= sizeof(fr::RecordHeader)) {
      const auto hdr = in.take<fr::RecordHeader>();
      if (hdr.size > fr::kMaxPayload || hdr.size > in.remaining()) break;
      h.record(hdr, in.bytes(hdr.size));
    }
  }
  const std::bitset<kFdWindow> leaked = open_fds(first_free) & ~preopen;
  for (int fd = first_free; leaked.any() && fd < first_free + kFdWindow; ++fd) {
    if (!leaked[fd - first_free]) continue;
    char what[256] = {};
    (void)!::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), what, sizeof what - 1);
    std::fprintf(stderr, "fd %d (%s) left open\n", fd, what);
    VHU_FUZZ_CHECK(!"fd leaked");
  }
  return 0;
}
