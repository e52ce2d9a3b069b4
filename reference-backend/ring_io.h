// What the vsock device may do with its virtqueues. The vhost-user layer
// implements it and decides, from the ring states, whether a ring may be
// touched at all: the device never sees a stopped or disabled ring.
#pragma once

#include <cstdint>
#include <optional>

#include "vhu/guest_memory.h"
#include "vhu/virtqueue.h"

namespace vsockref {

class RingIo {
 public:
  virtual ~RingIo() = default;
  // Started, enabled, addresses translated and not broken by a bad chain.
  virtual bool ring_usable(unsigned q) const = 0;
  // The front-end has handed the ring over (SET_VRING_KICK) and not taken it
  // back (GET_VRING_BASE), whatever its enable state.
  virtual bool ring_started(unsigned q) const = 0;
  // Next chain, or nullopt when none is available or the ring is broken (a
  // malformed chain is logged and stops the ring until it is set up again).
  virtual std::optional<vhu::Chain> pop(unsigned q) = 0;
  virtual void push(unsigned q, uint16_t head, uint32_t written) = 0;
  // Asks for kicks again; true when buffers arrived meanwhile.
  virtual bool rearm(unsigned q) = 0;
  virtual const vhu::GuestMemory& memory() const = 0;
  // Something outside the rings (a host socket, a sibling) has work for the
  // guest: run the device and deliver the notifications it owes.
  virtual void request_processing() = 0;
};

}  // namespace vsockref
