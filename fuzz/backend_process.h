// What a target that runs the reference back-end's code sets up once per
// process, as vhost-user-vsock-ref's main() does: SIGPIPE ignored (a peer
// that went away is an error return, not a signal), and logging off unless
// VHU_FUZZ_LOG names a level (to see what a crash input does).
#pragma once

#include <csignal>
#include <cstdlib>

#include "log.h"

namespace vhu::fuzz {

inline void init_backend_process() {
  vsockref::LogLevel level = vsockref::LogLevel::Off;
  if (const char* env = std::getenv("VHU_FUZZ_LOG")) (void)vsockref::parse_log_level(env, level);
  vsockref::set_log_level(level);
  std::signal(SIGPIPE, SIG_IGN);
}

}  // namespace vhu::fuzz
