// Split virtqueue, device side: pops descriptor chains out of guest memory
// with every bound checked, and pushes used entries. A malformed ring yields
// an Error, never undefined behaviour; the guest may rewrite the ring while we
// read it, so each descriptor is copied once and then validated.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vhu/dirty_log.h"
#include "vhu/guest_memory.h"
#include "vhu/messages.h"
#include "vhu/result.h"
#include "vhu/split_ring.h"

namespace vhu {

struct Segment {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

struct Chain {
  uint16_t head = 0;
  std::vector<Segment> segments;  // device-readable first, then device-writable
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;
};

class DeviceQueue {
 public:
  struct Options {
    bool indirect = false;   // VIRTIO_F_RING_INDIRECT_DESC negotiated
    bool event_idx = false;  // VIRTIO_F_RING_EVENT_IDX negotiated
  };

  // Ring addresses as front-end virtual addresses (SET_VRING_ADDR). Checks
  // the size (power of two, <= 32768), that each part lies wholly inside one
  // region and is aligned as the spec requires.
  Result<void> setup_uva(const GuestMemory& mem, uint32_t size, uint64_t desc, uint64_t avail,
                         uint64_t used, Options opt);
  // The same with guest-physical addresses.
  Result<void> setup_gpa(const GuestMemory& mem, uint32_t size, uint64_t desc, uint64_t avail,
                         uint64_t used, Options opt);
  bool ready() const { return desc_ != nullptr; }
  void reset();  // forget the ring (keeps nothing)

  uint32_t size() const { return size_; }
  uint16_t last_avail() const { return last_avail_; }
  void set_last_avail(uint16_t idx);  // SET_VRING_BASE; also resets the used index to it
  uint16_t used_idx() const { return used_idx_; }
  bool event_idx() const { return opt_.event_idx; }
  // The driver's used_event field as it reads now; should_notify() is what
  // honours it.
  uint16_t used_event() const;

  // Buffers the driver has made available that were not popped yet. Error
  // when the avail index is more than `size` ahead of last_avail.
  Result<uint16_t> pending() const;
  // Next chain, or nullopt when none is available. On error last_avail is
  // left unchanged, so the caller decides whether to skip or stop.
  Result<std::optional<Chain>> pop();
  // Steps over the entry at last_avail without walking its chain: for a
  // device that returns a malformed chain to the driver (push with 0 bytes)
  // rather than stopping the ring at it. Its head, which push() refuses if it
  // is out of range; nullopt when none is available; an error as pending().
  Result<std::optional<uint16_t>> skip();
  // Returns a chain to the driver with `written` bytes written into it.
  Result<void> push(uint16_t head, uint32_t written);

  // Dirty-page logging while a migration runs (vhost-user "Migration"); off
  // when `log` is null. push() then marks the bytes it says were written, in
  // the chain's writable descriptors (`buffers`; false only for a device that
  // marks them itself), and, with `used_gpa` (VHOST_VRING_F_LOG's
  // log_guest_addr), the used-ring bytes push() and enable_notifications()
  // store, at used_gpa plus their offset in the ring. setup() keeps it.
  struct Logging {
    const DirtyLog* log = nullptr;
    bool buffers = true;
    std::optional<uint64_t> used_gpa;
  };
  void set_logging(Logging l) { logging_ = l; }

  // After one or more push()es: whether the driver wants an interrupt
  // (VRING_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX).
  bool should_notify();
  // Ask the driver for kicks (true) or tell it we poll (false): VRING_USED_F_NO_NOTIFY,
  // or avail_event = last_avail with EVENT_IDX.
  void enable_notifications(bool enable);

 private:
  Result<void> setup(const GuestMemory& mem, uint32_t size, uint8_t* desc, uint8_t* avail,
                     uint8_t* used, Options opt);
  Result<void> walk(uint16_t head, Chain& out) const;
  uint16_t next_head() const;  // the avail ring's entry at last_avail
  uint16_t read_avail_idx() const;
  void log_used(uint64_t offset, uint64_t len) const;
  void log_written(uint16_t head, uint32_t written) const;

  const GuestMemory* mem_ = nullptr;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint32_t size_ = 0;
  Options opt_{};
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t signalled_used_ = 0;
  bool signalled_valid_ = false;
  Logging logging_{};
};

// Copy between a chain's segments and a flat buffer, starting `offset` bytes
// into the readable (or writable) part. Return the bytes copied.
Result<size_t> read_chain(const GuestMemory& mem, const Chain& c, uint64_t offset, std::span<uint8_t> dst);
Result<size_t> write_chain(const GuestMemory& mem, const Chain& c, uint64_t offset,
                           std::span<const uint8_t> src);

}  // namespace vhu
