// Split virtqueue, driver side: what the conformance runner's guest uses to
// lay out rings in its own guest memory, post buffers and collect used ones.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vhu/result.h"
#include "vhu/split_ring.h"

namespace vhu {

struct DriverBuffer {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

class DriverQueue {
 public:
  // Bytes of guest memory init() needs for a queue of `size`: descriptor
  // table, avail ring, used ring and a pool for indirect tables, each aligned.
  static uint64_t area_bytes(uint32_t size);
  static constexpr uint32_t kMaxIndirect = 16;  // descriptors per indirect table

  // `host` is the runner's mapping of guest-physical `gpa`, area_bytes(size) long.
  Result<void> init(uint8_t* host, uint64_t gpa, uint32_t size, bool event_idx);

  uint32_t size() const { return size_; }
  uint64_t desc_gpa() const { return gpa_; }
  uint64_t avail_gpa() const;
  uint64_t used_gpa() const;
  uint16_t num_free() const { return num_free_; }

  // Adds a chain (readable buffers must come first to be valid, but the
  // driver does not enforce it: negative tests build bad chains on purpose).
  // Not visible to the device until publish(). Returns the head index.
  Result<uint16_t> add(std::span<const DriverBuffer> bufs, bool indirect = false);
  // Makes all added chains available (release store of avail idx).
  void publish();
  // Next used element, freeing its descriptors.
  std::optional<vring::UsedElem> pop_used();
  uint16_t avail_idx() const { return avail_idx_; }
  uint16_t device_used_idx() const;  // the used idx the device last wrote
  uint16_t last_used() const { return last_used_; }

  // Whether the device asked for a kick after publish() (NO_NOTIFY flag or avail_event).
  bool needs_kick(uint16_t old_avail_idx) const;
  // Interrupt suppression: used_event with EVENT_IDX, NO_INTERRUPT otherwise.
  void set_used_event(uint16_t idx);
  void set_no_interrupt(bool on);

  // Raw views, for building malformed rings in negative tests.
  vring::Desc* desc_table() const;
  uint16_t* avail_ring() const;  // ring[size]
  void set_avail_idx_raw(uint16_t idx);

 private:
  uint8_t* host_ = nullptr;
  uint64_t gpa_ = 0;
  uint32_t size_ = 0;
  bool event_idx_ = false;
  uint64_t avail_off_ = 0, used_off_ = 0, indirect_off_ = 0;
  std::vector<uint16_t> free_;        // free descriptor indices (stack)
  std::vector<uint16_t> chain_len_;   // per head: descriptors to free
  std::vector<bool> chain_indirect_;
  uint16_t num_free_ = 0;
  uint16_t avail_idx_ = 0;
  uint16_t last_used_ = 0;
};

}  // namespace vhu
