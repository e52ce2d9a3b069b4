// The blob SET_DEVICE_STATE_FD moves between a source and a destination
// back-end. Layout (little-endian), version 1:
//   magic "VSKR" | u16 version | u16 flags | u32 body length | body | u32 CRC-32 of all before it
//   body: u64 guest_cid | u64 features | u64 protocol_features | u8 config[8] | u8 reset_pending
// The parser is the fuzz target: it rejects anything it does not fully
// understand and never reads past the span it is given.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "vhu/result.h"

namespace vsockref {

struct DeviceState {
  uint64_t guest_cid = 0;
  uint64_t features = 0;           // virtio features the driver acked
  uint64_t protocol_features = 0;  // vhost-user protocol features acked
  std::array<uint8_t, 8> config{};
  // The source had not yet delivered the TRANSPORT_RESET of an earlier load.
  bool transport_reset_pending = false;

  bool operator==(const DeviceState&) const = default;
};

inline constexpr uint16_t kDeviceStateVersion = 1;
inline constexpr size_t kDeviceStateMaxBytes = 4096;  // what a load will read at most

std::vector<uint8_t> serialize_device_state(const DeviceState& s);
vhu::Result<DeviceState> parse_device_state(std::span<const uint8_t> bytes);

uint32_t crc32(std::span<const uint8_t> bytes);

}  // namespace vsockref
