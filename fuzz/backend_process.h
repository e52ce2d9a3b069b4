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

#include "log.h"

namespace vhu::fuzz {

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
}

}  // namespace vhu::fuzz
