#include "log.h"

#include <fmt/chrono.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>

namespace vsockref {
namespace {
std::atomic<LogLevel> g_level{LogLevel::Info};
std::atomic<int> g_fd{STDERR_FILENO};
constexpr std::string_view kNames[] = {"error", "warn", "info", "debug", "trace"};
}  // namespace

LogLevel log_level() { return g_level.load(std::memory_order_relaxed); }
void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
void set_log_fd(int fd) { g_fd.store(fd, std::memory_order_relaxed); }

bool parse_log_level(std::string_view text, LogLevel& out) {
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if (text == kNames[i]) {
      out = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

void log_line(LogLevel level, std::string_view text) {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::string line = fmt::format("{:%H:%M:%S}.{:03d} vsock-ref {}: {}\n",
                                 fmt::localtime(std::chrono::system_clock::to_time_t(now)), ms,
                                 kNames[static_cast<int>(level)], text);
  // One write per line so lines from several threads (tests) never interleave.
  ssize_t ignored = ::write(g_fd.load(std::memory_order_relaxed), line.data(), line.size());
  (void)ignored;
}

}  // namespace vsockref
