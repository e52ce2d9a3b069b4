#include "vhu/scm_rights.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace vhu {

ssize_t recv_with_fds(int sock, std::span<uint8_t> buf, std::vector<UniqueFd>& fds, int flags, bool* ctrunc) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
  iovec iov{buf.data(), buf.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
  // A failed recvmsg leaves the control buffer as it was: stale bytes, no fds.
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  if (ctrunc && (mh.msg_flags & MSG_CTRUNC) != 0) *ctrunc = true;
  return n;
}

ssize_t send_with_fds(int sock, std::span<const uint8_t> bytes, std::span<const int> fds, int flags) {
  if (fds.size() > kScmMaxFd || (!fds.empty() && bytes.empty())) {
    errno = EINVAL;
    return -1;
  }
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (!fds.empty()) {
    const size_t space = CMSG_SPACE(sizeof(int) * fds.size());
    std::memset(control, 0, space);
    mh.msg_control = control;
    mh.msg_controllen = space;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(sock, &mh, flags);
}

}  // namespace vhu
