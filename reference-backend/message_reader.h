// Reassembles vhost-user messages from a non-blocking socket as bytes arrive,
// so one slow or stalled front-end never blocks the loop the other VMs share.
// vhu::Channel::recv waits for a whole message and drops one that carries
// more fds than its request takes; the back-end must instead act on such a
// message and close only the surplus (INTEROP bug 9), so it frames here.
#pragma once

#include <cstdint>
#include <optional>

#include "vhu/messages.h"
#include "vhu/result.h"

namespace vsockref {

class MessageReader {
 public:
  static constexpr uint32_t kMaxPayload = 4096;

  // Reads what is available. A complete message, nullopt when more bytes are
  // needed, or an Error: Closed at a message boundary, Desync otherwise.
  vhu::Result<std::optional<vhu::Message>> read(int fd);
  bool mid_message() const { return hdr_got_ > 0; }

 private:
  vhu::Message msg_;
  uint8_t hdr_[sizeof(vhu::Header)] = {};
  size_t hdr_got_ = 0;
  size_t payload_got_ = 0;
};

}  // namespace vsockref
