// Logging to stderr. The conformance runner keeps a back-end's stderr for its
// report, so every line that explains a refusal names the request and field.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace vsockref {

// Off: nothing at all (in-process fuzzers, where every input logs a refusal).
enum class LogLevel { Off = -1, Error = 0, Warn, Info, Debug, Trace };

LogLevel log_level();
void set_log_level(LogLevel level);
// Where lines go (stderr by default); the fd stays the caller's.
void set_log_fd(int fd);
// "error", "warn", "info", "debug", "trace"; false for anything else.
bool parse_log_level(std::string_view text, LogLevel& out);
void log_line(LogLevel level, std::string_view text);

}  // namespace vsockref

// Formatting costs nothing when the level is off.
#define VLOG(level, ...)                                                               \
  do {                                                                                 \
    if (::vsockref::log_level() >= ::vsockref::LogLevel::level)                        \
      ::vsockref::log_line(::vsockref::LogLevel::level, ::fmt::format(__VA_ARGS__));   \
  } while (0)
