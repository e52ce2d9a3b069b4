// The guest-memory layout of the `vring` fuzz target, shared with the seed
// generator so that seeds and target agree on where the rings live.
#pragma once

#include <cstdint>

namespace vhu::fuzz::vring_layout {

// Two adjacent regions, so chains that cross a region boundary are reachable.
inline constexpr uint64_t kRegionBytes = 32 * 1024;
inline constexpr uint64_t kRegion0Gpa = 0x100000;
inline constexpr uint64_t kRegion1Gpa = kRegion0Gpa + kRegionBytes;
inline constexpr uint64_t kMemoryBytes = 2 * kRegionBytes;
inline constexpr uint32_t kMaxQueueLog2 = 8;
// Input header (little-endian): u8 queue-size log2 (mod 9), u8 flags,
// u16 last_avail, u16 desc / avail / used offsets into guest memory; then the
// memory image (zero-filled past the end of the input). The ring offsets are
// part of the input so misplaced and overlapping rings are explored too.
struct Header {
  uint8_t size_log2;
  uint8_t flags;
  uint16_t last_avail;
  uint16_t desc_off;
  uint16_t avail_off;
  uint16_t used_off;
};
static_assert(sizeof(Header) == 10);
inline constexpr uint8_t kFlagIndirect = 1;
inline constexpr uint8_t kFlagEventIdx = 2;
// Bits 4-6 of flags are the vsock features the device runs with (feature
// bits 0-2: STREAM, SEQPACKET, NO_IMPLIED_STREAM); 0 means STREAM implied.
inline constexpr unsigned kVsockFeatureShift = 4;

}  // namespace vhu::fuzz::vring_layout
