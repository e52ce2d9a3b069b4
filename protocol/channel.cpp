#include "vhu/channel.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <optional>
#include <vector>

#include "vhu/scm_rights.h"

namespace vhu {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

// Remaining milliseconds for poll(); -1 when there is no deadline.
int remaining_ms(const std::optional<Clock::time_point>& deadline) {
  if (!deadline) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

enum class WaitResult { Ready, TimedOut, Failed };

WaitResult wait_for(int fd, short events, const std::optional<Clock::time_point>& deadline, int& err) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return WaitResult::Ready;  // POLLHUP/POLLERR surface from the next syscall
    if (r == 0) return WaitResult::TimedOut;
    if (errno == EINTR) continue;
    err = errno;
    return WaitResult::Failed;
  }
}

// Everything one recvmsg() produced besides the bytes.
struct Chunk {
  size_t bytes = 0;
  bool ctrunc = false;
};

// One recvmsg into buf; any SCM_RIGHTS fds go straight into UniqueFds so no
// later failure can leak them. Returns -errno on failure.
ssize_t recv_chunk(int sock, uint8_t* buf, size_t len, std::vector<UniqueFd>& fds, Chunk& out) {
  const ssize_t n = recv_with_fds(sock, std::span<uint8_t>(buf, len), fds, MSG_DONTWAIT, &out.ctrunc);
  if (n < 0) return -errno;
  out.bytes = static_cast<size_t>(n);
  return n;
}

// Writes all of `bytes`, attaching `fds` to the sendmsg that carries the first
// byte (the spec's rule, so the receiver finds them with the header).
Result<void> send_all(int sock, std::span<const uint8_t> bytes, std::span<const int> fds,
                      const std::string& what) {
  if (!fds.empty() && bytes.empty())
    return Err(fmt::format("{}: {} fd(s) need at least one byte to travel with", what, fds.size()));
  if (fds.size() > kScmMaxFd)
    return Err(fmt::format("{}: {} fd(s), the kernel takes at most {}", what, fds.size(), kScmMaxFd));
  size_t sent = 0;
  bool fds_sent = fds.empty();
  while (sent < bytes.size()) {
    const ssize_t n = send_with_fds(sock, bytes.subspan(sent), fds_sent ? std::span<const int>{} : fds, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        int err = 0;
        if (wait_for(sock, POLLOUT, std::nullopt, err) == WaitResult::Failed)
          return Err(fmt::format("{}: poll: {}", what, errno_text(err)), ErrorKind::Io);
        continue;
      }
      const int err = errno;
      const ErrorKind kind = (err == EPIPE || err == ECONNRESET) ? ErrorKind::Closed : ErrorKind::Io;
      return Err(fmt::format("{}: sendmsg after {} of {} bytes: {}", what, sent, bytes.size(), errno_text(err)),
                 kind);
    }
    if (n > 0) fds_sent = true;
    sent += static_cast<size_t>(n);
  }
  return Ok();
}

// Largest fd count the request's FdRule could accept. A message with fewer
// than required is passed on: the handler judges what is missing, while a
// surplus is the channel's business because those fds must be closed here.
size_t fd_rule_max(Plane plane, const Message& m) {
  const RequestInfo* info = request_info(plane, m.hdr.request);
  if (!info) return 0;
  switch (m.is_reply() ? info->reply_fds : info->request_fds) {
    case FdRule::None: return 0;
    case FdRule::One:
    case FdRule::OptionalOne: return 1;
    case FdRule::VringFd: {
      auto v = payload_u64(plane, m);
      return (v && (*v & kVringNoFdFlag) != 0) ? 0 : 1;
    }
    case FdRule::Regions: {
      auto t = payload_memory_table(m);
      return t ? t->size() : kMaxMemRegions;
    }
  }
  return 0;
}

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Err("unix socket path is empty");
  if (path.size() >= sizeof(addr.sun_path))
    return Err(fmt::format("unix socket path '{}' is {} bytes, the limit is {}", path, path.size(),
                           sizeof(addr.sun_path) - 1));
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

Channel::Channel(UniqueFd socket, Plane plane, ChannelLimits limits)
    : sock_(std::move(socket)), plane_(plane), limits_(limits) {
  limits_.max_fds = std::min(limits_.max_fds, kMaxFds);
}

Result<void> Channel::send(const Message& m) {
  const std::string name = request_name(plane_, m.hdr.request);
  if (!valid()) return Err(fmt::format("{}: send on a closed channel", name), ErrorKind::Closed);
  if (m.hdr.size != m.payload.size())
    return Err(fmt::format("{}: header size {} does not match payload length {}", name, m.hdr.size,
                           m.payload.size()));
  if (m.fds.size() > kMaxFds)
    return Err(fmt::format("{}: {} fds, at most {} per message", name, m.fds.size(), kMaxFds));
  std::vector<int> raw;
  raw.reserve(m.fds.size());
  for (size_t i = 0; i < m.fds.size(); ++i) {
    if (!m.fds[i].valid()) return Err(fmt::format("{}: fd {} is not open", name, i));
    raw.push_back(m.fds[i].get());
  }
  std::vector<uint8_t> bytes(sizeof(Header) + m.payload.size());
  std::memcpy(bytes.data(), &m.hdr, sizeof(Header));
  if (!m.payload.empty()) std::memcpy(bytes.data() + sizeof(Header), m.payload.data(), m.payload.size());
  return send_all(sock_.get(), bytes, raw, name);
}

Result<void> Channel::send_raw(std::span<const uint8_t> bytes, std::span<const int> fds) {
  if (!valid()) return Err("raw send on a closed channel", ErrorKind::Closed);
  return send_all(sock_.get(), bytes, fds, "raw send");
}

Result<Message> Channel::recv(int timeout_ms) {
  if (!valid()) return Err("receive on a closed channel", ErrorKind::Closed);
  std::optional<Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);

  Message m;
  Chunk chunk;
  uint8_t hdr_bytes[sizeof(Header)];
  size_t hdr_got = 0;

  // What to call the message in an error: its request once the id is known.
  auto label = [&]() -> std::string {
    if (hdr_got < sizeof(uint32_t)) return "message header";
    uint32_t id;
    std::memcpy(&id, hdr_bytes, sizeof(id));
    return request_name(plane_, id);
  };

  // Fills [buf, buf+len) completely; `part` only shapes the error text. Fds
  // that arrive on any of these reads belong to this message, since we never
  // ask for a byte past its end.
  auto read_exact = [&](uint8_t* buf, size_t len, size_t& got, const char* part) -> Result<void> {
    while (got < len) {
      const ssize_t n = recv_chunk(sock_.get(), buf + got, len - got, m.fds, chunk);
      if (n > 0) {
        got += static_cast<size_t>(n);
        continue;
      }
      const bool started = hdr_got > 0;
      if (n == 0 || n == -ECONNRESET) {
        if (!started) return Err("peer closed the connection", ErrorKind::Closed);
        return Err(fmt::format("{}: connection closed after {} of {} {} bytes", label(), got, len, part),
                   ErrorKind::Desync);
      }
      if (n == -EINTR) continue;
      if (n != -EAGAIN && n != -EWOULDBLOCK)
        return Err(fmt::format("{}: recvmsg: {}", label(), errno_text(static_cast<int>(-n))), ErrorKind::Io);
      int err = 0;
      switch (wait_for(sock_.get(), POLLIN, deadline, err)) {
        case WaitResult::Ready: break;
        case WaitResult::TimedOut:
          if (!started) return Err(fmt::format("no message within {} ms", timeout_ms), ErrorKind::Timeout);
          return Err(fmt::format("{}: timed out after {} ms with {} of {} {} bytes", label(), timeout_ms, got, len,
                                 part),
                     ErrorKind::Desync);
        case WaitResult::Failed:
          return Err(fmt::format("{}: poll: {}", label(), errno_text(err)), ErrorKind::Io);
      }
    }
    return Ok();
  };

  VHU_TRY(read_exact(hdr_bytes, sizeof(hdr_bytes), hdr_got, "header"));
  std::memcpy(&m.hdr, hdr_bytes, sizeof(Header));
  const std::string name = request_name(plane_, m.hdr.request);

  // Rejected before reading on: a size we will not buffer leaves no way to
  // find the next header, so the stream is lost either way.
  if (m.hdr.size > limits_.max_payload)
    return Err(fmt::format("{}: header size {} exceeds the maximum payload {}", name, m.hdr.size,
                           limits_.max_payload),
               ErrorKind::Desync);

  m.payload.resize(m.hdr.size);
  size_t payload_got = 0;
  VHU_TRY(read_exact(m.payload.data(), m.payload.size(), payload_got, "payload"));

  // From here the whole message is consumed, so every rejection is Invalid
  // and the stream stays framed. Returning drops m, which closes its fds.
  if (chunk.ctrunc)
    return Err(fmt::format("{}: ancillary data truncated (MSG_CTRUNC) after {} fd(s); closed them", name,
                           m.fds.size()));
  if (m.fds.size() > limits_.max_fds)
    return Err(fmt::format("{}: carries {} fds, the limit is {}; closed them", name, m.fds.size(),
                           limits_.max_fds));
  if (m.fds.size() > fd_rule_max(plane_, m)) {
    auto rule = check_fd_count(plane_, m);
    if (!rule) return Err(fmt::format("{}; closed them", rule.message()));
    return Err(fmt::format("{}: carries {} fd(s), more than it takes; closed them", name, m.fds.size()));
  }
  return m;
}

Result<std::pair<UniqueFd, UniqueFd>> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return Err(fmt::format("socketpair: {}", errno_text(errno)), ErrorKind::Io);
  return std::pair<UniqueFd, UniqueFd>(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

Result<UniqueFd> listen_unix(const std::string& path, int backlog) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  // A socket file left by an earlier run makes bind fail with EADDRINUSE.
  // Only sockets are removed: any other file at the path is a caller mistake.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Err(fmt::format("'{}' exists and is not a socket", path), ErrorKind::Io);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return Err(fmt::format("unlink stale socket '{}': {}", path, errno_text(errno)), ErrorKind::Io);
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Err(fmt::format("socket: {}", errno_text(errno)), ErrorKind::Io);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(sockaddr_un)) != 0)
    return Err(fmt::format("bind '{}': {}", path, errno_text(errno)), ErrorKind::Io);
  if (::listen(fd.get(), backlog) != 0)
    return Err(fmt::format("listen '{}': {}", path, errno_text(errno)), ErrorKind::Io);
  return fd;
}

Result<UniqueFd> connect_unix(const std::string& path) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Err(fmt::format("socket: {}", errno_text(errno)), ErrorKind::Io);
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(sockaddr_un)) == 0) break;
    // A connect interrupted by a signal carries on in the kernel; a retry
    // then reports EISCONN once it has finished.
    if (errno == EINTR) continue;
    if (errno == EISCONN) break;
    return Err(fmt::format("connect '{}': {}", path, errno_text(errno)), ErrorKind::Io);
  }
  return fd;
}

Result<UniqueFd> accept_unix(int listen_fd, int timeout_ms) {
  std::optional<Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int err = 0;
    switch (wait_for(listen_fd, POLLIN, deadline, err)) {
      case WaitResult::Ready: break;
      case WaitResult::TimedOut:
        return Err(fmt::format("no connection within {} ms", timeout_ms), ErrorKind::Timeout);
      case WaitResult::Failed: return Err(fmt::format("poll: {}", errno_text(err)), ErrorKind::Io);
    }
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) continue;
    return Err(fmt::format("accept: {}", errno_text(errno)), ErrorKind::Io);
  }
}

}  // namespace vhu
