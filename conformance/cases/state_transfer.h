// Device state transfer as a front-end performs it (vhost-user "Migrating
// back-end state"): SET_DEVICE_STATE_FD with one end of a pipe, the data
// through whichever fd the reply designates, EOF, CHECK_DEVICE_STATE.
// The one implementation every case family uses; the reply's shape is
// checked on every transfer, not only in the device_state.* cases.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "case.h"

namespace conform {

struct Pipe {
  vhu::UniqueFd rd, wr;
};
Pipe make_pipe();

struct StateFdReply {
  bool closed = false;  // the back-end closed the connection instead of answering
  uint64_t value = 0;
  vhu::UniqueFd fd;     // the back-end's own channel end, when it sent one
  bool error() const { return (value & vhu::kDeviceStateErrorMask) != 0; }
};

// SET_DEVICE_STATE_FD and its reply, whose shape fails the case whatever the
// verdict: 8 bytes, the reply flag, the request echoed, at most one fd; an
// error with bit 8 and no fd; a success with an fd exactly when bit 8 is
// clear. `close_ok`: a closed connection is an answer (returned as closed).
StateFdReply set_state_fd(Ctx& ctx, uint32_t direction, uint32_t phase, vhu::UniqueFd fd, bool close_ok = false);

// An error reply with bit 8 and no fd, or the connection closed (allowed).
void expect_state_fd_refused(Ctx& ctx, uint32_t direction, uint32_t phase, vhu::UniqueFd fd, const std::string& why);

// CHECK_DEVICE_STATE's u64.
uint64_t check_device_state(Ctx& ctx);

// The front-end's end of a save: everything up to EOF, bounded in time and size.
std::vector<uint8_t> read_state_to_eof(Ctx& ctx, int fd);

// The front-end's end of a load: writes `blob` and closes. A back-end that
// stops reading (too much, or garbage) ends the write early; returns whether
// all of it went in. CHECK judges the rest.
bool write_state_and_close(Ctx& ctx, vhu::UniqueFd fd, std::span<const uint8_t> blob);

// Saves the state of the (suspended) back-end on the current connection.
// Fails the case on any departure from the protocol or a non-zero CHECK.
std::vector<uint8_t> save_device_state(Ctx& ctx);

// Loads `blob` in QEMU's order: the request, the data and the close, then
// CHECK at once, while the back-end may still be reading. Returns CHECK's
// value; the request itself must succeed.
uint64_t load_device_state_check(Ctx& ctx, std::span<const uint8_t> blob);

// As load_device_state_check, failing the case unless CHECK answers 0.
void load_device_state(Ctx& ctx, std::span<const uint8_t> blob);

}  // namespace conform
