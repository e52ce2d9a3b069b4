#include "host_listener.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "faults.h"
#include "handshake.h"
#include "log.h"
#include "vhu/channel.h"

namespace vsockref {

HostListener::HostListener(EventLoop& loop, std::string path, OnConnect on_connect, std::string name)
    : loop_(loop), path_(std::move(path)), on_connect_(std::move(on_connect)), name_(std::move(name)) {}

HostListener::~HostListener() {
  for (auto& [fd, p] : pending_) {
    loop_.remove(fd);
    loop_.cancel_timer(p.timer);
  }
  if (listen_) {
    loop_.remove(listen_.get());
    ::unlink(path_.c_str());
  }
}

vhu::Result<void> HostListener::start() {
  auto l = vhu::listen_unix(path_, 128);
  if (!l) return l.error();
  listen_ = std::move(*l);
  set_nonblocking(listen_.get());
  return loop_.add(listen_.get(), EPOLLIN, [this](uint32_t) { on_accept(); });
}

void HostListener::on_accept() {
  for (;;) {
    vhu::UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) return;
    if (pending_.size() >= kMaxPending) {
      VLOG(Warn, "{}: host connection dropped: {} handshakes already pending", name_, pending_.size());
      continue;
    }
    const int raw = fd.get();
    if (!loop_.add(raw, EPOLLIN, [this, raw](uint32_t) { on_readable(raw); })) continue;
    // A client that never finishes its line must not hold a slot forever.
    const auto timer = loop_.add_timer(kHandshakeTimeout, [this, raw] {
      VLOG(Info, "{}: host handshake timed out", name_);
      if (auto it = pending_.find(raw); it != pending_.end()) {
        it->second.timer = 0;
        drop(raw);
      }
    });
    pending_[raw] = Pending{std::move(fd), timer, {}};
  }
}

void HostListener::drop(int fd) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  loop_.remove(fd);
  if (it->second.timer) loop_.cancel_timer(it->second.timer);
  pending_.erase(it);
}

void HostListener::on_readable(int fd) {
  auto it = pending_.find(fd);
  if (it == pending_.end()) return;
  Pending& p = it->second;
  char buf[kMaxHandshakeLine];
  const size_t want = kMaxHandshakeLine - p.line.size();
  while (VSOCKREF_FAULT(block_on_connect_line)) {
    // Waits on the loop for the rest of the line, as a blocking reader would.
    const ssize_t n = ::recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
    if ((n < 0 && errno != EAGAIN) || n == 0 || (n > 0 && (std::memchr(buf, '\n', static_cast<size_t>(n)) ||
                                                          static_cast<size_t>(n) == want)))
      break;
    ::usleep(1000);
  }
  const ssize_t n = ::recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    VLOG(Info, "{}: host program closed before finishing CONNECT (got {} bytes)", name_, p.line.size());
    drop(fd);
    return;
  }
  // Consume up to the newline, or everything peeked when there is none yet:
  // those bytes all belong to the line, and consuming them keeps a slow
  // writer's partial line from waking level-triggered epoll again and again.
  const void* nl = std::memchr(buf, '\n', static_cast<size_t>(n));
  const size_t take = nl ? static_cast<size_t>(static_cast<const char*>(nl) - buf) + 1 : static_cast<size_t>(n);
  const ssize_t r = ::recv(fd, buf, take, MSG_DONTWAIT);
  if (r != static_cast<ssize_t>(take)) {
    drop(fd);
    return;
  }
  p.line.append(buf, take);
  const ConnectLine line =
      parse_connect_line(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(p.line.data()), p.line.size()));
  if (line.status == ConnectLine::NeedMore) return;
  if (line.status == ConnectLine::Invalid) {
    VLOG(Warn, "{}: host handshake refused: {}", name_, line.error);
    drop(fd);
    return;
  }
  vhu::UniqueFd owned = std::move(p.fd);
  loop_.remove(fd);
  if (p.timer) loop_.cancel_timer(p.timer);
  pending_.erase(it);
  VLOG(Debug, "{}: host CONNECT {}", name_, line.port);
  on_connect_(std::move(owned), line.port);
}

}  // namespace vsockref
