#include "message_reader.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "faults.h"
#include "vhu/scm_rights.h"

namespace vsockref {

vhu::Result<std::optional<vhu::Message>> MessageReader::read(int fd) {
  for (;;) {
    uint8_t* dst;
    size_t want;
    if (hdr_got_ < sizeof hdr_) {
      dst = hdr_ + hdr_got_;
      want = sizeof hdr_ - hdr_got_;
    } else {
      dst = msg_.payload.data() + payload_got_;
      want = msg_.payload.size() - payload_got_;
    }
    if (want == 0) break;
    // The fds that come are owned from here on: no error below leaks them.
    const ssize_t n = vhu::recv_with_fds(fd, std::span<uint8_t>(dst, want), msg_.fds, MSG_DONTWAIT);
    if (n > 0) {
      if (hdr_got_ < sizeof hdr_) {
        hdr_got_ += static_cast<size_t>(n);
        if (hdr_got_ == sizeof hdr_) {
          std::memcpy(&msg_.hdr, hdr_, sizeof hdr_);
          if (VSOCKREF_FAULT(ignore_size_field)) {
            const auto* info = vhu::request_info(vhu::Plane::Frontend, msg_.hdr.request);
            if (auto n = info ? vhu::fixed_payload_size(info->request) : std::nullopt)
              msg_.hdr.size = static_cast<uint32_t>(*n);
          }
          if (msg_.hdr.size > kMaxPayload && VSOCKREF_FAULT(trust_header_size)) {
            msg_.payload.resize(1u << 24);  // waits for a payload that never comes (capped: RAM is finite)
            return std::optional<vhu::Message>{};
          }
          if (msg_.hdr.size > kMaxPayload)
            return vhu::Err(fmt::format("{}: header field size = {} exceeds {} bytes",
                                        vhu::request_name(vhu::Plane::Frontend, msg_.hdr.request), msg_.hdr.size,
                                        kMaxPayload),
                            vhu::ErrorKind::Desync);
          msg_.payload.resize(msg_.hdr.size);
        }
      } else {
        payload_got_ += static_cast<size_t>(n);
      }
      continue;
    }
    if (n == 0) {
      if (hdr_got_ == 0) return vhu::Err("front-end closed the connection", vhu::ErrorKind::Closed);
      return vhu::Err(fmt::format("front-end closed the connection inside a message ({} header bytes, {} payload bytes)",
                                  hdr_got_, payload_got_),
                      vhu::ErrorKind::Desync);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<vhu::Message>{};
    return vhu::Err(fmt::format("recvmsg: {}", std::strerror(errno)), vhu::ErrorKind::Io);
  }
  vhu::Message done = std::move(msg_);
  msg_ = vhu::Message{};
  hdr_got_ = 0;
  payload_got_ = 0;
  return std::optional<vhu::Message>{std::move(done)};
}

}  // namespace vsockref
