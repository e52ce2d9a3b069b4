// Split virtqueue layout (virtio 1.3, 2.7): the constants and sizes both the
// device-side walker and the driver-side emulation are built from.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vhu::vring {

inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint32_t kMaxQueueSize = 32768;

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct UsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(Desc) == 16);
static_assert(sizeof(UsedElem) == 8);

// Offsets within the avail and used rings: flags, idx, then the entries.
inline constexpr uint64_t kRingFlags = 0;
inline constexpr uint64_t kRingIdx = 2;
inline constexpr uint64_t kRingEntries = 4;

constexpr bool valid_queue_size(uint32_t n) { return n >= 1 && n <= kMaxQueueSize && (n & (n - 1)) == 0; }
constexpr uint64_t desc_table_bytes(uint32_t n) { return 16ull * n; }
// flags, idx, ring[n], used_event
constexpr uint64_t avail_ring_bytes(uint32_t n) { return 6ull + 2ull * n; }
// flags, idx, ring[n], avail_event
constexpr uint64_t used_ring_bytes(uint32_t n) { return 6ull + 8ull * n; }
// Alignment the spec requires of each part (2.7 "Virtqueue alignment").
inline constexpr uint64_t kDescAlign = 16;
inline constexpr uint64_t kAvailAlign = 2;
inline constexpr uint64_t kUsedAlign = 4;

// The classic notification-suppression test (2.7.10): true when new_idx has
// moved past event since old_idx.
constexpr bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

}  // namespace vhu::vring
