// One framed vhost-user message at a time over a SOCK_STREAM Unix socket,
// with its file descriptors (SCM_RIGHTS).
#pragma once

#include <cstdint>
#include <span>

#include "vhu/messages.h"
#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vhu {

struct ChannelLimits {
  // Largest payload accepted; larger sizes are rejected before any payload
  // byte is read (ErrorKind::Desync: the stream cannot be re-synchronised).
  uint32_t max_payload = 4096;
  // Most fds accepted on one message (never above kMaxFds).
  size_t max_fds = kMaxFds;
};

class Channel {
 public:
  Channel() = default;
  Channel(UniqueFd socket, Plane plane, ChannelLimits limits = {});

  bool valid() const { return sock_.valid(); }
  int fd() const { return sock_.get(); }
  Plane plane() const { return plane_; }
  const ChannelLimits& limits() const { return limits_; }
  void close() { sock_.reset(); }

  // Sends header, payload and m.fds (which stay owned by m). Short writes and
  // EINTR are retried; the fds ride with the first byte of the header.
  Result<void> send(const Message& m);
  // Sends arbitrary bytes with optional fds in one sendmsg-and-complete; for
  // negative tests and fuzzing only.
  Result<void> send_raw(std::span<const uint8_t> bytes, std::span<const int> fds = {});

  // Receives one message. timeout_ms < 0 waits forever; the timeout applies to
  // the whole message. Errors (each names the request):
  //  - Closed: EOF before the first header byte;
  //  - Desync: EOF or timeout inside a message, or a size over max_payload;
  //  - Invalid: the message was read completely but carried more fds than
  //    max_fds or its FdRule allows; those fds are closed;
  //  - Timeout: nothing arrived in time (stream still framed);
  //  - Io: a socket error.
  Result<Message> recv(int timeout_ms = -1);

 private:
  UniqueFd sock_;
  Plane plane_ = Plane::Frontend;
  ChannelLimits limits_;
};

// A connected pair, both ends SOCK_STREAM, close-on-exec.
Result<std::pair<UniqueFd, UniqueFd>> socket_pair();
// Listening / connecting helpers for a filesystem Unix socket path.
Result<UniqueFd> listen_unix(const std::string& path, int backlog = 16);
Result<UniqueFd> connect_unix(const std::string& path);
Result<UniqueFd> accept_unix(int listen_fd, int timeout_ms = -1);

}  // namespace vhu
