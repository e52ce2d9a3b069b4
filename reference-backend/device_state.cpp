#include "device_state.h"

#include <fmt/format.h>

#include <cstring>

#include "vhu/vsock.h"

namespace vsockref {
namespace {

constexpr uint8_t kMagic[4] = {'V', 'S', 'K', 'R'};
constexpr size_t kHeaderBytes = 4 + 2 + 2 + 4;
constexpr size_t kBodyV1 = 8 + 8 + 8 + 8 + 1;
constexpr size_t kCrcBytes = 4;

void put16(std::vector<uint8_t>& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get(std::span<const uint8_t> b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(b[off + i]) << (8 * i);
  return v;
}

}  // namespace

uint32_t crc32(std::span<const uint8_t> bytes) {
  // IEEE 802.3 polynomial, bitwise: the blob is tens of bytes, a table buys nothing.
  uint32_t crc = 0xffffffffu;
  for (uint8_t b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<uint8_t> serialize_device_state(const DeviceState& s) {
  std::vector<uint8_t> out(std::begin(kMagic), std::end(kMagic));
  put16(out, kDeviceStateVersion);
  put16(out, 0);
  put32(out, static_cast<uint32_t>(kBodyV1));
  put64(out, s.guest_cid);
  put64(out, s.features);
  put64(out, s.protocol_features);
  out.insert(out.end(), s.config.begin(), s.config.end());
  out.push_back(s.transport_reset_pending ? 1 : 0);
  put32(out, crc32(out));
  return out;
}

vhu::Result<DeviceState> parse_device_state(std::span<const uint8_t> b) {
  if (b.size() < kHeaderBytes + kCrcBytes)
    return vhu::Err(fmt::format("device state: {} bytes, shorter than the {}-byte header and checksum", b.size(),
                                kHeaderBytes + kCrcBytes));
  if (b.size() > kDeviceStateMaxBytes)
    return vhu::Err(fmt::format("device state: {} bytes, more than {}", b.size(), kDeviceStateMaxBytes));
  if (std::memcmp(b.data(), kMagic, 4) != 0) return vhu::Err("device state: bad magic (not a vsock-ref state)");
  const auto version = static_cast<uint16_t>(get(b, 4, 2));
  const auto flags = static_cast<uint16_t>(get(b, 6, 2));
  const auto body_len = static_cast<uint32_t>(get(b, 8, 4));
  if (version != kDeviceStateVersion)
    return vhu::Err(fmt::format("device state: version {} (this back-end reads version {})", version,
                                kDeviceStateVersion));
  if (flags != 0) return vhu::Err(fmt::format("device state: unknown flags {:#x}", flags));
  if (body_len != b.size() - kHeaderBytes - kCrcBytes)
    return vhu::Err(fmt::format("device state: body length {} but {} bytes follow the header", body_len,
                                b.size() - kHeaderBytes - kCrcBytes));
  if (body_len != kBodyV1)
    return vhu::Err(fmt::format("device state: version 1 body is {} bytes, got {}", kBodyV1, body_len));
  const uint32_t want = static_cast<uint32_t>(get(b, b.size() - kCrcBytes, 4));
  const uint32_t got = crc32(b.first(b.size() - kCrcBytes));
  if (want != got) return vhu::Err(fmt::format("device state: checksum {:#010x}, computed {:#010x}", want, got));

  DeviceState s;
  size_t off = kHeaderBytes;
  s.guest_cid = get(b, off, 8);
  s.features = get(b, off + 8, 8);
  s.protocol_features = get(b, off + 16, 8);
  std::memcpy(s.config.data(), b.data() + off + 24, 8);
  const uint8_t pending = b[off + 32];
  if (vhu::vsock::is_reserved_cid(s.guest_cid))
    return vhu::Err(fmt::format("device state: guest_cid {} is reserved", s.guest_cid));
  if (pending > 1) return vhu::Err(fmt::format("device state: reset_pending byte {} is not 0 or 1", pending));
  s.transport_reset_pending = pending == 1;
  return s;
}

}  // namespace vsockref
