// What a target that runs the reference back-end's code sets up once per
// process, as vhost-user-vsock-ref's main() does: SIGPIPE ignored (a peer
// that went away is an error return, not a signal), and logging off unless
// VHU_FUZZ_LOG says "LEVEL" (to see what a crash input does, on stderr) or
// "LEVEL:PATH" (lines go to PATH: CTest's corpus replay formats every line
// at trace level into /dev/null, so the log's printers meet every input).
#pragma once

#include <fcntl.h>

#include <csignal>
#include <cstdlib>
#include <string>

#include "event_loop.h"
#include "fuzz_input.h"
#include "log.h"

namespace vhu::fuzz {

// The back-end's event loop, one for the process as in vhost-user-vsock-ref,
// where it outlives every front-end connection. Made before the first input's
// fds are counted, so its epoll set and wake fd are no leak; never destroyed:
// the engine may exit from any thread. (A loop per input cost an epoll set
// and an eventfd made and freed each time, 3-4 % of a message input.)
inline vsockref::EventLoop& process_loop() {
  static auto* loop = new vsockref::EventLoop;
  return *loop;
}

// A harness's handle on process_loop(), declared before the back-end objects
// that use the loop so that it is destroyed after them: by then they must
// have left the loop as they found it, no fd watched, no timer set. A
// callback left behind would run for a connection that is gone.
class ProcessLoop {
 public:
  ProcessLoop() : loop_(process_loop()) { VHU_FUZZ_CHECK(loop_.idle()); }
  ProcessLoop(const ProcessLoop&) = delete;
  ProcessLoop& operator=(const ProcessLoop&) = delete;
  ~ProcessLoop() { VHU_FUZZ_CHECK(loop_.idle()); }
  vsockref::EventLoop& get() { return loop_; }

 private:
  vsockref::EventLoop& loop_;
};

inline void init_backend_process() {
  vsockref::LogLevel level = vsockref::LogLevel::Off;
  if (const char* env = std::getenv("VHU_FUZZ_LOG")) {
    const std::string spec = env;
    const size_t colon = spec.find(':');
    (void)vsockref::parse_log_level(spec.substr(0, colon), level);
    if (colon != std::string::npos) {
      // Opened once and kept for the process's life: the engine may exit from any thread.
      const int fd = ::open(spec.c_str() + colon + 1, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd >= 0) vsockref::set_log_fd(fd);
    }
  }
  vsockref::set_log_level(level);
  std::signal(SIGPIPE, SIG_IGN);
  (void)process_loop();
}

}  // namespace vhu::fuzz
