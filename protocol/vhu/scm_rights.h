// File descriptors that travel with bytes over a Unix socket (SCM_RIGHTS).
// The only place that builds or parses the control message, for the channel,
// the back-end's incremental reader and the fuzz harnesses alike.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vhu/unique_fd.h"

namespace vhu {

// The kernel refuses more than SCM_MAX_FD fds in one message. Receiving with
// room for all of them means a surplus arrives, owned and countable, instead
// of being closed by the kernel behind MSG_CTRUNC.
inline constexpr size_t kScmMaxFd = 253;

// One recvmsg(2) into `buf` with `flags` (MSG_CMSG_CLOEXEC is always added).
// Every fd that came is appended to `fds`, owned before anything else can
// fail. Returns what recvmsg returned; on -1, errno is recvmsg's. `ctrunc`, if
// given, is set when the kernel dropped fds for want of room.
ssize_t recv_with_fds(int sock, std::span<uint8_t> buf, std::vector<UniqueFd>& fds, int flags,
                      bool* ctrunc = nullptr);

// One sendmsg(2) of `bytes` with `fds` attached (none when empty). Returns
// what sendmsg returned; -1 with EINVAL for more than kScmMaxFd fds, or fds
// without a byte to carry them.
ssize_t send_with_fds(int sock, std::span<const uint8_t> bytes, std::span<const int> fds, int flags);

}  // namespace vhu
