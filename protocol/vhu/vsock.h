// virtio-vsock wire formats (virtio 1.3, 5.10): the 44-byte little-endian
// packet header, event and config layouts, with length-checked decoding.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "vhu/result.h"

namespace vhu::vsock {

inline constexpr unsigned kRxQueue = 0;
inline constexpr unsigned kTxQueue = 1;
inline constexpr unsigned kEventQueue = 2;

inline constexpr size_t kHdrSize = 44;
inline constexpr size_t kEventSize = 4;
inline constexpr size_t kConfigSize = 8;

inline constexpr uint64_t kHostCid = 2;

// X(NAME, value)
#define VHU_VSOCK_OPS(X) \
  X(INVALID, 0)          \
  X(REQUEST, 1)          \
  X(RESPONSE, 2)         \
  X(RST, 3)              \
  X(SHUTDOWN, 4)         \
  X(RW, 5)               \
  X(CREDIT_UPDATE, 6)    \
  X(CREDIT_REQUEST, 7)

enum class Op : uint16_t {
#define VHU_X(name, v) name = v,
  VHU_VSOCK_OPS(VHU_X)
#undef VHU_X
};

inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;

inline constexpr uint32_t kShutdownRcv = 1;
inline constexpr uint32_t kShutdownSend = 2;
inline constexpr uint32_t kSeqEom = 1;
inline constexpr uint32_t kSeqEor = 2;

inline constexpr uint32_t kEventTransportReset = 0;

struct Hdr {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;

  bool operator==(const Hdr&) const = default;
};

std::array<uint8_t, kHdrSize> encode(const Hdr& h);
void encode(const Hdr& h, std::span<uint8_t, kHdrSize> out);
// Error when fewer than 44 bytes are given.
Result<Hdr> decode(std::span<const uint8_t> bytes);

std::array<uint8_t, kEventSize> encode_event(uint32_t id);
Result<uint32_t> decode_event(std::span<const uint8_t> bytes);

std::array<uint8_t, kConfigSize> encode_config(uint64_t guest_cid);
Result<uint64_t> decode_config(std::span<const uint8_t> bytes);

// 0, 1, 2 (host), 0xffffffff and 0xffffffffffffffff cannot be a guest's CID;
// neither can any value with the reserved upper 32 bits set.
bool is_reserved_cid(uint64_t cid);

std::string_view op_name(uint16_t op);  // "RW", or "UNKNOWN"
std::string describe(const Hdr& h);

}  // namespace vhu::vsock
