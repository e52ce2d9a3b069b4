#include "message_reader.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "faults.h"

namespace vsockref {
namespace {
constexpr size_t kScmMaxFd = 253;
}

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
    iovec iov{dst, want};
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    // A failed recvmsg leaves msg_controllen untouched: the buffer then holds
    // stale bytes, never fds.
    if (n < 0) mh.msg_controllen = 0;
    // Fds first: whatever else happens they are owned, so never leaked.
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        msg_.fds.emplace_back(f);
      }
    }
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
