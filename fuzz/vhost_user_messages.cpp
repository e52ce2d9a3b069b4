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
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <csignal>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "fuzz_input.h"
#include "log.h"
#include "vhu/fuzz_fds.h"
#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"

namespace {

namespace fr = vhu::fuzz::framing;
using vhu::FrontendReq;

struct Sink : vsockref::ReplySink {
  std::vector<vhu::Message> got;
  void send(vhu::Message&& m) override { got.push_back(std::move(m)); }
};

// Eventfds for the back-end, handed out as dups of eventfds that live as long
// as the process: making and destroying one (an anonymous inode each) was the
// harness's largest cost, a dup and a read are cheap. Each pool entry goes out
// at most once per input, so no two fds of one input share a counter, and is
// drained as it goes out, so no count one input left is seen by the next. The
// back-end's dups are closed by the end of the input (the leak check says so),
// and its epoll set with them.
class EventfdPool {
 public:
  // Made before the first input's fds are counted, so they are no leak.
  static constexpr size_t kSize = 64;
  EventfdPool() {
    for (auto& fd : pool_) {
      fd = vhu::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      VHU_FUZZ_CHECK(fd.valid());
    }
  }
  void new_input() { next_ = 0; }
  vhu::UniqueFd take(bool signalled) {
    if (next_ == pool_.size()) {  // an input with more eventfds than the pool
      vhu::UniqueFd fd(::eventfd(signalled ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK));
      VHU_FUZZ_CHECK(fd.valid());
      return fd;
    }
    const int fd = pool_[next_++].get();
    uint64_t v;
    (void)!::read(fd, &v, sizeof v);
    if (signalled) {
      v = 1;
      VHU_FUZZ_CHECK(::write(fd, &v, sizeof v) == sizeof v);
    }
    vhu::UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    VHU_FUZZ_CHECK(dup.valid());
    return dup;
  }

 private:
  std::array<vhu::UniqueFd, kSize> pool_;
  size_t next_ = 0;
};

EventfdPool& eventfds() {
  static EventfdPool* pool = new EventfdPool;  // never destroyed: the engine may exit from any thread
  return *pool;
}

class Harness {
 public:
  Harness() : backend_(loop_, sink_, vsockref::BackendOptions{}) {}

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
  vhu::UniqueFd make_memfd(uint64_t bytes) {
    vhu::UniqueFd fd(::memfd_create("vhu-fuzz-region", MFD_CLOEXEC));
    VHU_FUZZ_CHECK(fd.valid());
    VHU_FUZZ_CHECK(::ftruncate(fd.get(), static_cast<off_t>(bytes)) == 0);
    regions_.emplace_back(::dup(fd.get()), bytes);
    if (regions_.size() > vhu::fuzz::kPokeRegions) regions_.erase(regions_.begin());
    return fd;
  }

  vhu::UniqueFd make_eventfd(bool signalled) { return eventfds().take(signalled); }

  // The fd for position `i` of a message, of the kind the shared rules
  // (vhu/fuzz_fds.h) say, so the black-box fuzzer sends the same fds.
  vhu::UniqueFd make_fd(const vhu::Message& m, size_t i, bool signalled) {
    const vhu::fuzz::FdPlan p = vhu::fuzz::plan_fd(m, i);
    switch (p.kind) {
      case vhu::fuzz::FdKind::Memfd:
        return make_memfd(p.memfd_bytes);
      case vhu::fuzz::FdKind::StatePipe: {
        int fds[2];
        VHU_FUZZ_CHECK(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        // Load: the back-end reads, we write. Anything else: it writes, we drain.
        state_write_.reset();
        state_read_.reset();
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
      if (round == 2) {
        state_write_.reset();
        state_read_.reset();
      }
      service();
      backend_.poll_once();
    }
    VHU_FUZZ_CHECK(!backend_.waiting());
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
        backend_.disconnect();
        break;
      default:
        break;
    }
  }

  // What the front-end does meanwhile: drain the pipe of a save.
  void service() {
    if (state_read_) {
      uint8_t buf[4096];
      while (::read(state_read_.get(), buf, sizeof buf) > 0) {
      }
    }
  }

  vsockref::EventLoop loop_;
  Sink sink_;
  // Destroyed before the fds below, as a front-end outlives its back-end session.
  vsockref::Backend backend_;
  std::vector<std::pair<vhu::UniqueFd, uint64_t>> regions_;
  std::map<uint8_t, vhu::UniqueFd> kicks_;
  vhu::UniqueFd state_write_, state_read_;
};

// Which of the fds from `first` on are open. Taken before each input: the
// engine and the sanitizers open fds of their own between inputs (the
// symbolizer's pipes), which are no leak of ours. One poll() answers for the
// whole window (a closed fd comes back POLLNVAL): a syscall per fd cost a
// fifth of the target's time.
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
  // The kernel hands out the lowest free number; a dup of stderr (open in
  // any process the engine runs) is the cheapest way to ask.
  const int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
  VHU_FUZZ_CHECK(fd >= 0);
  ::close(fd);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Quiet unless VHU_FUZZ_LOG names a level (to see what a crash input does).
  vsockref::LogLevel level = vsockref::LogLevel::Off;
  if (const char* env = std::getenv("VHU_FUZZ_LOG")) (void)vsockref::parse_log_level(env, level);
  vsockref::set_log_level(level);
  std::signal(SIGPIPE, SIG_IGN);  // as vhost-user-vsock-ref's main() does
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool initialised = (LLVMFuzzerInitialize(nullptr, nullptr), true);
  (void)initialised;
  eventfds().new_input();
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
  // Everything the input opened is closed again: no fd in the window may be
  // open that was not open before the input. An input opens far fewer than
  // kFdWindow fds at a time (8 per message, 16 memory files, a few rings).
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
