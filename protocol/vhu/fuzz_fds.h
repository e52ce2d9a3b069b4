// Which file descriptors a record of the `vhost_user_messages` framing
// (fuzz_framing.h, fuzz/README.md) travels with: the rules alone, shared by
// the in-process fuzz target and the runner's black-box fuzzer, so an input
// means the same thing to both. Each side makes (or pools) the fds its own way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "vhu/fuzz_framing.h"
#include "vhu/messages.h"

namespace vhu::fuzz {

// Memory files are sparse, so a QEMU-sized region costs nothing until
// touched; beyond this the file is made this long and a mapping of the
// region the payload describes is refused by the back-end.
inline constexpr uint64_t kMaxMemfdBytes = 1ull << 30;
// kActionPoke picks among this many most recent memory files.
inline constexpr size_t kPokeRegions = 16;

enum class FdKind : uint8_t {
  Memfd,      // a memory file of `memfd_bytes`
  Eventfd,    // kick, call, err, and anything whose kind the request does not say
  StatePipe,  // SET_DEVICE_STATE_FD: a pipe; the back-end gets the read end for a load
  HungUpPipe,   // where an eventfd belongs, with kAuxHungUp: a pipe's read end, its writer closed
  RegularFile,  // where an eventfd belongs, with kAuxRegularFile: an empty memory file
};

struct FdPlan {
  FdKind kind = FdKind::Eventfd;
  uint64_t memfd_bytes = 0;          // Memfd
  bool load = false;                 // StatePipe: the back-end reads (direction LOAD)
  std::optional<uint8_t> kick_ring;  // SET_VRING_KICK for a ring below 4: what kActionKick writes to
};

// The fds a record names itself: h.fds - 1 (at most kMaxFds), none for
// h.fds == 0. A raw record, with no request to take a rule from, gets these.
size_t named_fd_count(const framing::RecordHeader& h);
// How many fds ride with the record's message: the request's FdRule for
// h.fds == 0, else named_fd_count(h).
size_t fd_count(const framing::RecordHeader& h, const Message& m);
// What fd number `i` of message `m` is, made for what the payload asks, valid
// or not; `aux` is the record's (framing::kAux*).
FdPlan plan_fd(const Message& m, size_t i, uint8_t aux = 0);

}  // namespace vhu::fuzz
