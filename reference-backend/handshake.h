// The hybrid-vsock host protocol shared by Firecracker, cloud-hypervisor and
// vhost-device-vsock: a host program connects to uds-path and writes
// "CONNECT <guest port>\n"; once the guest accepts, the back-end answers
// "OK <host port>\n" and the socket becomes the byte stream.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace vsockref {

inline constexpr size_t kMaxHandshakeLine = 64;

struct ConnectLine {
  enum Status { NeedMore, Done, Invalid } status = NeedMore;
  uint32_t port = 0;
  size_t line_bytes = 0;  // Done: bytes up to and including '\n'
  std::string error;      // Invalid: why, for the log
};

// Looks at the bytes received so far (peeked, not consumed) and decides as
// early as possible: a wrong prefix is Invalid before any newline arrives.
// Accepts an optional '\r' before '\n'.
ConnectLine parse_connect_line(std::span<const uint8_t> bytes);

std::string format_ok_line(uint32_t host_port);

}  // namespace vsockref
