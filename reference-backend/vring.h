// Per-ring vhost-user state: the two independent state bits of the spec's
// "Ring states" (started/stopped, enabled/disabled), the notification fds and
// the device-side queue walker.
#pragma once

#include <cstdint>
#include <optional>

#include "vhu/messages.h"
#include "vhu/unique_fd.h"
#include "vhu/virtqueue.h"

namespace vsockref {

struct Vring {
  uint32_t num = 0;                 // SET_VRING_NUM
  std::optional<vhu::VringAddr> addr;
  vhu::DeviceQueue queue;           // ready() once addr, num and memory agree
  bool started = false;
  bool enabled = false;
  bool broken = false;              // a malformed chain: stop until set up again
  bool poll = false;                // SET_VRING_KICK with the no-fd flag
  bool kick_lost = false;           // fault lose_kick_before_enable only
  vhu::UniqueFd kick, call, err;
  vhu::UniqueFd replaced_call;      // fault keep_replaced_call_fd only
  bool notify_due = false;          // pushed since the last call
  // Where GET_VRING_BASE left the ring, to tell a `cont` (same base and
  // addresses) from a driver that re-initialised the ring.
  struct StopPoint {
    uint16_t base;
    vhu::VringAddr addr;
  };
  std::optional<StopPoint> stopped_at;
};

}  // namespace vsockref
