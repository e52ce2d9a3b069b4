#include "state_transfer.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace conform {

namespace {

using vhu::FrontendReq;

struct Pipe {
  vhu::UniqueFd rd, wr;
};

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
  return {vhu::UniqueFd(p[0]), vhu::UniqueFd(p[1])};
}

// SET_DEVICE_STATE_FD(direction, stopped) carrying `fd`; returns the fd the
// data must go through: the back-end's own when it returned one, else none.
vhu::UniqueFd set_state_fd(Ctx& ctx, uint32_t direction, vhu::UniqueFd fd) {
  auto m = vhu::Message::request_with(static_cast<uint32_t>(FrontendReq::SET_DEVICE_STATE_FD),
                                      vhu::DeviceStateParams{direction, vhu::kPhaseStopped});
  m.fds.push_back(std::move(fd));
  const char* what = direction == vhu::kTransferSave ? "save" : "load";
  auto o = ctx.fe().try_request(m);
  check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
        fmt::format("a u64 reply to SET_DEVICE_STATE_FD({}, stopped)", what), o.text);
  check((o.u64 & vhu::kDeviceStateErrorMask) == 0,
        fmt::format("SET_DEVICE_STATE_FD({}, stopped) to succeed on a suspended back-end", what),
        fmt::format("error bits {:#x}", o.u64 & vhu::kDeviceStateErrorMask));
  const bool no_fd = (o.u64 & vhu::kDeviceStateInvalidFd) != 0;
  check(no_fd ? o.reply.fds.empty() : o.reply.fds.size() == 1,
        "bit 8 set and no fd, or bit 8 clear and exactly one fd",
        fmt::format("reply {:#x} with {} fd(s)", o.u64, o.reply.fds.size()));
  return no_fd ? vhu::UniqueFd() : std::move(o.reply.fds[0]);
}

void expect_check_ok(Ctx& ctx, const char* what) {
  auto o = ctx.fe().try_request(vhu::Message::empty(static_cast<uint32_t>(FrontendReq::CHECK_DEVICE_STATE)));
  check(o.kind == Outcome::Reply && o.reply.payload.size() == 8, "a u64 reply to CHECK_DEVICE_STATE", o.text);
  check(o.u64 == 0, fmt::format("CHECK_DEVICE_STATE 0 after the {}", what), o.text);
}

}  // namespace

std::vector<uint8_t> save_device_state(Ctx& ctx) {
  Pipe p = make_pipe();
  vhu::UniqueFd theirs = set_state_fd(ctx, vhu::kTransferSave, std::move(p.wr));
  vhu::UniqueFd rd = theirs.valid() ? std::move(theirs) : std::move(p.rd);
  // Our copy of the write end went with the message, so EOF means the
  // back-end closed its end: the end of the state.
  std::vector<uint8_t> blob;
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 3000));
  for (;;) {
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    pollfd pf{rd.get(), POLLIN, 0};
    if (left <= 0 || ::poll(&pf, 1, left) <= 0)
      fail("the back-end to write its state and close the pipe", fmt::format("no EOF after {} bytes", blob.size()));
    uint8_t buf[4096];
    const ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("the saved state to be readable", std::strerror(errno));
    if (n == 0) break;
    blob.insert(blob.end(), buf, buf + n);
    if (blob.size() > (64u << 20)) fail("a bounded device state", "more than 64 MiB");
  }
  expect_check_ok(ctx, "save");
  return blob;
}

void load_device_state(Ctx& ctx, std::span<const uint8_t> blob) {
  Pipe p = make_pipe();
  vhu::UniqueFd theirs = set_state_fd(ctx, vhu::kTransferLoad, std::move(p.rd));
  vhu::UniqueFd wr = theirs.valid() ? std::move(theirs) : std::move(p.wr);
  // A pipe holds 64 KiB; a larger state waits for the back-end to read.
  size_t off = 0;
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 3000));
  while (off < blob.size()) {
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    pollfd pf{wr.get(), POLLOUT, 0};
    if (left <= 0 || ::poll(&pf, 1, left) <= 0)
      fail("the back-end to read the state it is loading", fmt::format("{} of {} bytes taken", off, blob.size()));
    const ssize_t n = ::write(wr.get(), blob.data() + off, blob.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("the back-end to read the state it is loading", n < 0 ? std::strerror(errno) : "0 bytes");
    off += static_cast<size_t>(n);
  }
  wr.reset();  // EOF: the end of the state
  expect_check_ok(ctx, "load");
}

}  // namespace conform
