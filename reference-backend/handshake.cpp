#include "handshake.h"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

namespace vsockref {

ConnectLine parse_connect_line(std::span<const uint8_t> bytes) {
  constexpr std::string_view kPrefix = "CONNECT ";
  ConnectLine r;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const size_t cmp = std::min(text.size(), kPrefix.size());
  if (text.substr(0, cmp) != kPrefix.substr(0, cmp)) {
    r.status = ConnectLine::Invalid;
    r.error = "the line does not start with \"CONNECT \"";
    return r;
  }
  const size_t nl = text.find('\n');
  if (nl == std::string_view::npos) {
    if (text.size() >= kMaxHandshakeLine) {
      r.status = ConnectLine::Invalid;
      r.error = fmt::format("no newline in the first {} bytes", kMaxHandshakeLine);
    }
    return r;  // NeedMore
  }
  if (nl + 1 > kMaxHandshakeLine) {
    r.status = ConnectLine::Invalid;
    r.error = fmt::format("line longer than {} bytes", kMaxHandshakeLine);
    return r;
  }
  std::string_view digits = text.substr(kPrefix.size(), nl - kPrefix.size());
  if (!digits.empty() && digits.back() == '\r') digits.remove_suffix(1);
  if (digits.empty() || digits.size() > 10 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    r.status = ConnectLine::Invalid;
    r.error = fmt::format("port '{}' is not a decimal number", std::string(digits));
    return r;
  }
  uint64_t port = 0;
  for (char c : digits) port = port * 10 + static_cast<uint64_t>(c - '0');
  if (port > 0xffffffffull) {
    r.status = ConnectLine::Invalid;
    r.error = fmt::format("port {} does not fit in 32 bits", port);
    return r;
  }
  r.status = ConnectLine::Done;
  r.port = static_cast<uint32_t>(port);
  r.line_bytes = nl + 1;
  return r;
}

std::string format_ok_line(uint32_t host_port) { return fmt::format("OK {}\n", host_port); }

}  // namespace vsockref
