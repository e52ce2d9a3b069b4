#include "state_transfer.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common.h"

namespace conform {

using vhu::FrontendReq;
using vhu::Message;

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
  return {vhu::UniqueFd(p[0]), vhu::UniqueFd(p[1])};
}

StateFdReply set_state_fd(Ctx& ctx, uint32_t direction, uint32_t phase, vhu::UniqueFd fd, bool close_ok) {
  auto& fe = ctx.fe();
  const uint32_t id = req(FrontendReq::SET_DEVICE_STATE_FD);
  const std::string what = fmt::format("SET_DEVICE_STATE_FD(direction {}, phase {}{})", direction, phase,
                                       fd ? "" : ", no fd");
  StateFdReply out;
  {
    Message m = Message::request_with(id, vhu::DeviceStateParams{direction, phase});
    if (fd) m.fds.push_back(std::move(fd));
    auto s = fe.try_send(m);
    // Our copy of the channel end closes here: the EOF the other side waits
    // for depends on it.
    if (!s) {
      if (close_ok) {
        out.closed = true;
        return out;
      }
      fail(fmt::format("the back-end to accept {}", what), "send failed: " + s.message());
    }
  }
  const int ms = fe.wait_ms();
  auto r = fe.try_recv(ms);
  if (!r) {
    if (r.error().kind == vhu::ErrorKind::Closed && close_ok) {
      out.closed = true;
      return out;
    }
    fail(fmt::format("a reply to {} within {} ms", what, ms),
         r.error().kind == vhu::ErrorKind::Timeout ? "nothing" : r.message());
  }
  Message rep = std::move(r).value();
  if (auto v = vhu::check_header_version(rep); !v) fail("a reply to " + what + " with a valid header", v.message());
  check(rep.is_reply(), "the reply to " + what + " with the reply flag (bit 2)", fmt::format("flags {:#x}", rep.hdr.flags));
  check(rep.hdr.request == id, fmt::format("the reply to {} carrying request id {}", what, id),
        fmt::format("request id {}", rep.hdr.request));
  check(rep.payload.size() == 8, "a u64 reply (8 bytes) to " + what, fmt::format("{} payload bytes", rep.payload.size()));
  check(rep.fds.size() <= 1, "at most one fd with the reply to " + what, fmt::format("{} fds", rep.fds.size()));
  std::memcpy(&out.value, rep.payload.data(), 8);
  const bool invalid_fd = (out.value & vhu::kDeviceStateInvalidFd) != 0;
  if (out.error()) {
    check(rep.fds.empty(), fmt::format("no fd with the error reply {:#x} to {}", out.value, what),
          fmt::format("{} fd attached", rep.fds.size()));
    check(invalid_fd, fmt::format("bit 8 (invalid FD) set in the error reply to {}, as no fd comes", what),
          fmt::format("{:#x}", out.value));
  } else {
    check(invalid_fd == rep.fds.empty(),
          fmt::format("bit 8 (invalid FD) set exactly when no fd comes with the reply to {}", what),
          fmt::format("{:#x} with {} fd(s)", out.value, rep.fds.size()));
    if (!rep.fds.empty()) out.fd = std::move(rep.fds[0]);
  }
  return out;
}

void expect_state_fd_refused(Ctx& ctx, uint32_t direction, uint32_t phase, vhu::UniqueFd fd, const std::string& why) {
  auto r = set_state_fd(ctx, direction, phase, std::move(fd), true);
  if (r.closed) {
    check(!ctx.backend().crashed(), "the back-end to survive " + why, ctx.backend().status_text());
    ctx.note("the back-end closed the connection on " + why + " (allowed)");
    return;
  }
  check(r.error(), fmt::format("an error (bits 0-7 non-zero) for {}", why), fmt::format("{:#x}: success", r.value));
  ctx.expect_alive("after " + why);
}

uint64_t check_device_state(Ctx& ctx) {
  auto& fe = ctx.fe();
  const uint32_t id = req(FrontendReq::CHECK_DEVICE_STATE);
  fe.send(Message::empty(id));
  Message r = fe.expect_reply(id, "the reply to CHECK_DEVICE_STATE");
  auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
  check(v.ok(), "a u64 reply (8 bytes) to CHECK_DEVICE_STATE", fmt::format("{} payload bytes", r.payload.size()));
  return *v;
}

std::vector<uint8_t> read_state_to_eof(Ctx& ctx, int fd) {
  // A vsock device's state is a few hundred bytes; this only bounds a
  // back-end that never stops writing.
  constexpr size_t kMaxState = 64u << 20;
  std::vector<uint8_t> out;
  const int ms = std::min(ctx.remaining_ms(), 3000);
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0)
      fail(fmt::format("the back-end to write its state and close its end of the channel within {} ms", ms),
           fmt::format("{} bytes and no end of file", out.size()));
    uint8_t buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) return out;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("the saved state readable from the channel", std::strerror(errno));
    out.insert(out.end(), buf, buf + n);
    if (out.size() > kMaxState) fail("a bounded device state", "more than 64 MiB and no end of file");
  }
}

bool write_state_and_close(Ctx& ctx, vhu::UniqueFd fd, std::span<const uint8_t> blob) {
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  // A reader that closed its end raises SIGPIPE in the writing thread: keep
  // it from ending the runner, and take it off this thread before unblocking.
  sigset_t pipe_sig, old;
  sigemptyset(&pipe_sig);
  sigaddset(&pipe_sig, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_sig, &old);
  size_t off = 0;
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms(), 3000));
  while (off < blob.size()) {
    const ssize_t n = ::write(fd.get(), blob.data() + off, blob.size() - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
      pollfd p{fd.get(), POLLOUT, 0};
      if (left > 0 && ::poll(&p, 1, static_cast<int>(left)) > 0) continue;
    }
    break;  // EPIPE, or the back-end stopped reading
  }
  timespec zero{};
  while (sigtimedwait(&pipe_sig, nullptr, &zero) > 0) {
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return off == blob.size();
}

std::vector<uint8_t> save_device_state(Ctx& ctx) {
  Pipe p = make_pipe();
  auto r = set_state_fd(ctx, vhu::kTransferSave, vhu::kPhaseStopped, std::move(p.wr));
  check(!r.error(), "SET_DEVICE_STATE_FD(save, stopped) accepted on a suspended device",
        fmt::format("error {:#x}", r.value));
  // "When this flag is not set, the front-end must use the returned file
  // descriptor". Our copy of the write end went with the message, so EOF
  // means the back-end closed its end: the end of the state.
  vhu::UniqueFd in = r.fd ? std::move(r.fd) : std::move(p.rd);
  auto blob = read_state_to_eof(ctx, in.get());
  const uint64_t c = check_device_state(ctx);
  check(c == 0, "CHECK_DEVICE_STATE 0 after a complete save", fmt::format("{:#x}", c));
  return blob;
}

uint64_t load_device_state_check(Ctx& ctx, std::span<const uint8_t> blob) {
  Pipe p = make_pipe();
  auto r = set_state_fd(ctx, vhu::kTransferLoad, vhu::kPhaseStopped, std::move(p.rd));
  check(!r.error(), "SET_DEVICE_STATE_FD(load, stopped) accepted on a suspended device",
        fmt::format("error {:#x}", r.value));
  write_state_and_close(ctx, r.fd ? std::move(r.fd) : std::move(p.wr), blob);
  return check_device_state(ctx);
}

void load_device_state(Ctx& ctx, std::span<const uint8_t> blob) {
  const uint64_t c = load_device_state_check(ctx, blob);
  check(c == 0, fmt::format("CHECK_DEVICE_STATE 0 after loading the {} bytes the source saved", blob.size()),
        fmt::format("{:#x}", c));
}

}  // namespace conform
