// The host side of one VM: the Unix socket at uds-path where host programs
// connect and say "CONNECT <port>\n". Bytes are peeked and only those of the
// line are consumed, so what a client sends right after it stays in the
// socket as the start of the stream.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>

#include "event_loop.h"
#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vsockref {

class HostListener {
 public:
  using OnConnect = std::function<void(vhu::UniqueFd fd, uint32_t guest_port)>;

  HostListener(EventLoop& loop, std::string path, OnConnect on_connect, std::string name);
  ~HostListener();
  HostListener(const HostListener&) = delete;
  HostListener& operator=(const HostListener&) = delete;

  vhu::Result<void> start();
  const std::string& path() const { return path_; }
  size_t pending_handshakes() const { return pending_.size(); }

 private:
  static constexpr size_t kMaxPending = 128;
  static constexpr std::chrono::milliseconds kHandshakeTimeout{10000};
  struct Pending {
    vhu::UniqueFd fd;
    EventLoop::TimerId timer;
    std::string line;  // bytes of the line consumed so far (never past '\n')
  };
  void on_accept();
  void on_readable(int fd);
  void drop(int fd);

  EventLoop& loop_;
  std::string path_;
  OnConnect on_connect_;
  std::string name_;
  vhu::UniqueFd listen_;
  std::unordered_map<int, Pending> pending_;
};

}  // namespace vsockref
