// The front-end's side of the fds that the `vhost_user_messages` framing's
// messages carry, shared by the targets that speak it (vhost_user_messages,
// vhost_user_socket): which fd a message gets follows vhu/fuzz_fds.h (the
// rules the black-box fuzzer uses too); this file makes them, keeps the
// front-end's ends, runs the harness actions that use them (kick, poke guest
// memory, feed the state pipe), runs an input's records, and checks that it
// leaves no fd open.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <cstddef>
#include <cstdio>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <utility>

#include "fuzz_input.h"
#include "vhu/fuzz_fds.h"
#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"
#include "vhu/unique_fd.h"

namespace vhu::fuzz {

// The front-end's own handle on a file it handed to the back-end (to kick a
// ring, to write guest memory): the pool's fd, which outlives every input, or
// a dup of the one handed over when that came from past the pool. A kept pool
// fd saves a dup and a close per fd, a tenth of a message input's syscalls.
class KeptFd {
 public:
  KeptFd() = default;
  static KeptFd pooled(int fd) { return KeptFd(fd, UniqueFd()); }
  static KeptFd own(UniqueFd fd) {
    const int raw = fd.get();
    return KeptFd(raw, std::move(fd));
  }
  int get() const { return fd_; }

 private:
  KeptFd(int fd, UniqueFd owned) : fd_(fd), owned_(std::move(owned)) {}
  int fd_ = -1;
  UniqueFd owned_;
};

// Eventfds, memory files and hung-up pipes handed out as dups of ones that
// live as long as the process: making and destroying them (an inode each)
// was the harnesses' largest cost; a dup and a reset are cheap. Each pool
// entry goes out at most once per input, so no two fds of one input share a
// file, and is reset (a drained counter; a file truncated to nothing and
// grown again, so all zeros), so nothing one input left is seen by the next.
// The back-end's dups are closed by the end of the input (the leak check says
// so), and with them its mappings.
template <class Kind>
class FdPool {
 public:
  FdPool() {
    for (auto& fd : pool_) fd = Kind::make();
  }
  void new_input() {
    Kind::recycle(std::span<const UniqueFd>(pool_.data(), next_));
    next_ = 0;
  }
  template <class Arg>
  UniqueFd take(Arg arg) {
    if (next_ == pool_.size()) {  // an input with more of them than the pool
      UniqueFd fd = Kind::make();
      Kind::prepare(fd.get(), arg);
      return fd;
    }
    const int fd = pool_[next_++].get();
    Kind::prepare(fd, arg);
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    VHU_FUZZ_CHECK(dup.valid());
    return dup;
  }
  // take(), and the front-end's own handle on the same file.
  template <class Arg>
  std::pair<UniqueFd, KeptFd> take_kept(Arg arg) {
    const bool from_pool = next_ < pool_.size();
    UniqueFd fd = take(arg);
    if (from_pool) return {std::move(fd), KeptFd::pooled(pool_[next_ - 1].get())};
    UniqueFd mine(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    VHU_FUZZ_CHECK(mine.valid());
    return {std::move(fd), KeptFd::own(std::move(mine))};
  }

 private:
  std::array<UniqueFd, Kind::kPoolSize> pool_;
  size_t next_ = 0;
};

struct EventfdKind {
  static constexpr size_t kPoolSize = 256;
  static UniqueFd make() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    VHU_FUZZ_CHECK(fd.valid());
    return fd;
  }
  // Most counters an input was given are never signalled: one poll finds the
  // few to drain, where a read of each mostly failed with EAGAIN. Nothing can
  // signal them between inputs: every dup was closed (the leak check).
  static void recycle(std::span<const UniqueFd> used) {
    std::array<pollfd, kPoolSize> p{};
    for (size_t i = 0; i < used.size(); ++i) p[i] = {used[i].get(), POLLIN, 0};
    if (::poll(p.data(), used.size(), 0) <= 0) return;
    for (size_t i = 0; i < used.size(); ++i) {
      uint64_t v;
      if (p[i].revents & POLLIN) (void)!::read(p[i].fd, &v, sizeof v);
    }
  }
  static void prepare(int fd, bool signalled) {
    if (!signalled) return;
    const uint64_t one = 1;
    VHU_FUZZ_CHECK(::write(fd, &one, sizeof one) == sizeof one);
  }
};

struct MemfdKind {
  static constexpr size_t kPoolSize = 128;
  static UniqueFd make() {
    UniqueFd fd(::memfd_create("vhu-fuzz-memory", MFD_CLOEXEC));
    VHU_FUZZ_CHECK(fd.valid());
    return fd;
  }
  // Reset as each goes out, in prepare(): nothing to do between inputs.
  static void recycle(std::span<const UniqueFd>) {}
  // A file with no page in it reads as zeros already, and most are never
  // written (a stat is cheaper than truncating). Only a write moves the file
  // offset that all dups share (the back-end signalling a file it was given
  // for a call fd), and a write leaves a page behind, so the offset is reset
  // with the contents.
  static void prepare(int fd, uint64_t bytes) {
    struct stat st {};
    VHU_FUZZ_CHECK(::fstat(fd, &st) == 0);
    if (st.st_blocks == 0) {
      if (static_cast<uint64_t>(st.st_size) != bytes) VHU_FUZZ_CHECK(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
      return;
    }
    VHU_FUZZ_CHECK(::lseek(fd, 0, SEEK_SET) == 0);
    VHU_FUZZ_CHECK(::ftruncate(fd, 0) == 0);
    VHU_FUZZ_CHECK(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  }
};

// A pipe's read end whose writer is gone reads EOF, and stays so whatever a
// reader does: nothing to reset. Fuzzed records ask for up to 8 at a time.
struct HungUpPipeKind {
  static constexpr size_t kPoolSize = 64;
  static UniqueFd make() {
    int fds[2];
    VHU_FUZZ_CHECK(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
    ::close(fds[1]);
    return UniqueFd(fds[0]);
  }
  static void recycle(std::span<const UniqueFd>) {}
  static void prepare(int, std::nullptr_t) {}
};

// Made on the first call, before the first input's fds are counted, so the
// pools are no leak; never destroyed: the engine may exit from any thread.
inline FdPool<EventfdKind>& eventfds() {
  static auto* pool = new FdPool<EventfdKind>;
  return *pool;
}
inline FdPool<MemfdKind>& memfds() {
  static auto* pool = new FdPool<MemfdKind>;
  return *pool;
}
inline FdPool<HungUpPipeKind>& hung_up_pipes() {
  static auto* pool = new FdPool<HungUpPipeKind>;
  return *pool;
}
inline void new_input() {
  eventfds().new_input();
  memfds().new_input();
  hung_up_pipes().new_input();
}

class FrontendFds {
 public:
  // The fd for position `i` of message `m`, of the kind vhu/fuzz_fds.h says.
  UniqueFd make(const Message& m, size_t i, uint8_t aux) {
    const FdPlan p = plan_fd(m, i, aux);
    switch (p.kind) {
      case FdKind::Memfd:
        return make_memfd(p.memfd_bytes);
      case FdKind::StatePipe: {
        int fds[2];
        VHU_FUZZ_CHECK(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        close_transfer();
        // Load: the back-end reads, we write. Anything else: it writes, we drain.
        if (p.load) {
          state_write_ = UniqueFd(fds[1]);
          return UniqueFd(fds[0]);
        }
        state_read_ = UniqueFd(fds[0]);
        return UniqueFd(fds[1]);
      }
      case FdKind::HungUpPipe:
        return hung_up_pipes().take(nullptr);
      case FdKind::RegularFile:
        return memfds().take(uint64_t{0});
      case FdKind::Eventfd:
        break;
    }
    const bool signalled = (aux & framing::kAuxSignal) != 0;
    if (!p.kick_ring) return eventfds().take(signalled);
    auto [fd, kept] = eventfds().take_kept(signalled);
    kicks_[*p.kick_ring] = std::move(kept);
    return std::move(fd);
  }

  // kActionKick, kActionPoke and kActionStatePipe; false for any other record.
  bool action(const framing::RecordHeader& h, Input& in) {
    switch (h.request) {
      case framing::kActionKick: {
        auto it = kicks_.find(static_cast<uint8_t>(in.take<uint32_t>()));
        if (it != kicks_.end()) {
          const uint64_t one = 1;
          (void)!::write(it->second.get(), &one, sizeof one);
        }
        return true;
      }
      case framing::kActionPoke: {
        if (regions_.empty()) return true;
        auto& [fd, bytes] = regions_[h.flags % regions_.size()];
        const uint64_t off = in.take<uint64_t>() % bytes;
        const auto data = in.rest();
        const size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), bytes - off));
        if (n) VHU_FUZZ_CHECK(::pwrite(fd.get(), data.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
        return true;
      }
      case framing::kActionStatePipe: {
        if (!state_write_) return true;
        const auto data = in.rest();
        (void)!::write(state_write_.get(), data.data(), data.size());
        if (h.flags & 1) state_write_.reset();
        return true;
      }
      default:
        return false;
    }
  }

  // What the front-end does meanwhile: drain the pipe of a save.
  void drain_save() {
    if (!state_read_) return;
    uint8_t buf[4096];
    while (::read(state_read_.get(), buf, sizeof buf) > 0) {
    }
  }
  bool transfer_open() const { return state_write_.valid() || state_read_.valid(); }
  // A real front-end closes its end once the state is written or read.
  void close_transfer() {
    state_write_.reset();
    state_read_.reset();
  }

 private:
  UniqueFd make_memfd(uint64_t bytes) {
    auto [fd, kept] = memfds().take_kept(bytes);
    regions_.emplace_back(std::move(kept), bytes);
    if (regions_.size() > kPokeRegions) regions_.pop_front();
    return std::move(fd);
  }

  std::deque<std::pair<KeptFd, uint64_t>> regions_;
  std::map<uint8_t, KeptFd> kicks_;
  UniqueFd state_write_, state_read_;
};

// No fd the input opened is left open: taken before the input (the engine
// and the sanitizers open fds of their own between inputs, the symbolizer's
// pipes, which are no leak of ours), verified after it. An input opens far
// fewer than kWindow fds at a time (8 per message, a few memory files and
// rings). One poll() answers for the whole window (a closed fd comes back
// POLLNVAL): a syscall per fd cost a fifth of a target's time.
//
// What the last input left open is what the next one starts with, unless the
// engine kept an fd in between: the kernel gives it the lowest free number,
// so the lowest free number moves, and only then is the window polled anew.
// (An engine that opened two fds and kept only the higher one would defeat
// this; the report names the fd's file, so such a finding is told apart.)
//
// Since Linux 6.2 the size of /proc/self/fd is the number of open fds, and an
// fstat of it costs a quarter of polling the window: when the count is what
// it was before the input, nothing was left open, bar an input that also
// closed an fd it did not own, which the window does not catch either (it
// looks for fds opened). Otherwise, or on an older kernel (size 0), the
// window decides and names the fd.
class FdLeakCheck {
 public:
  static constexpr int kWindow = 128;
  FdLeakCheck() : count_(open_count()), first_(lowest_free()) {
    before_ = first_ == last().first ? last().open : open_fds(first_);
  }
  void verify() const {
    if (count_ > 0 && open_count() == count_) {
      last() = {first_, before_};
      return;
    }
    const std::bitset<kWindow> after = open_fds(first_);
    const std::bitset<kWindow> leaked = after & ~before_;
    for (int fd = first_; leaked.any() && fd < first_ + kWindow; ++fd) {
      if (!leaked[fd - first_]) continue;
      char what[256] = {};
      (void)!::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), what, sizeof what - 1);
      std::fprintf(stderr, "fd %d (%s) left open\n", fd, what);
      VHU_FUZZ_CHECK(!"fd leaked");
    }
    last() = {first_, after};
  }

 private:
  // The kernel hands out the lowest free number; a dup of stderr (open in
  // any process the engine runs) is the cheapest way to ask.
  static int lowest_free() {
    const int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
    VHU_FUZZ_CHECK(fd >= 0);
    ::close(fd);
    return fd;
  }
  // 0 where the kernel does not count. The directory is opened once and
  // kept, before any window is taken, so it is no leak.
  static off_t open_count() {
    static const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st {};
    return dir >= 0 && ::fstat(dir, &st) == 0 ? st.st_size : 0;
  }
  static std::bitset<kWindow> open_fds(int first) {
    std::array<pollfd, kWindow> p{};
    for (int i = 0; i < kWindow; ++i) p[i].fd = first + i;
    VHU_FUZZ_CHECK(::poll(p.data(), p.size(), 0) >= 0);
    std::bitset<kWindow> open;
    for (int i = 0; i < kWindow; ++i) open[i] = !(p[i].revents & POLLNVAL);
    return open;
  }

  struct Window {
    int first = -1;
    std::bitset<kWindow> open;
  };
  static Window& last() {
    static Window w;
    return w;
  }

  off_t count_;
  int first_;
  std::bitset<kWindow> before_;
};

// One input through a fresh Harness (a class with record(header, payload)):
// each record in turn (framing::for_each_record); then no fd the input opened
// may be left open.
template <class Harness>
void run_records(const uint8_t* data, size_t size) {
  new_input();
  const FdLeakCheck leaks;
  {
    Harness h;
    framing::for_each_record({data, size}, [&](const framing::RecordHeader& hdr, std::span<const uint8_t> payload) {
      h.record(hdr, payload);
    });
  }
  leaks.verify();
}

}  // namespace vhu::fuzz
