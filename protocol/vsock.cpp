#include "vhu/vsock.h"

#include <fmt/format.h>

namespace vhu::vsock {
namespace {

// The wire format is little-endian whatever the host is, so fields are
// assembled byte by byte rather than memcpy'd.
template <class T>
void put_le(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

template <class T>
T get_le(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

// Byte offsets of struct virtio_vsock_hdr (packed, 5.10.6).
enum Off : size_t {
  kSrcCid = 0,
  kDstCid = 8,
  kSrcPort = 16,
  kDstPort = 20,
  kLen = 24,
  kType = 28,
  kOp = 30,
  kFlags = 32,
  kBufAlloc = 36,
  kFwdCnt = 40,
};
static_assert(kFwdCnt + 4 == kHdrSize);

}  // namespace

void encode(const Hdr& h, std::span<uint8_t, kHdrSize> out) {
  uint8_t* p = out.data();
  put_le(p + kSrcCid, h.src_cid);
  put_le(p + kDstCid, h.dst_cid);
  put_le(p + kSrcPort, h.src_port);
  put_le(p + kDstPort, h.dst_port);
  put_le(p + kLen, h.len);
  put_le(p + kType, h.type);
  put_le(p + kOp, h.op);
  put_le(p + kFlags, h.flags);
  put_le(p + kBufAlloc, h.buf_alloc);
  put_le(p + kFwdCnt, h.fwd_cnt);
}

std::array<uint8_t, kHdrSize> encode(const Hdr& h) {
  std::array<uint8_t, kHdrSize> out{};
  encode(h, std::span<uint8_t, kHdrSize>(out));
  return out;
}

Result<Hdr> decode(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHdrSize)
    return Err(fmt::format("vsock header needs {} bytes, got {}", kHdrSize, bytes.size()));
  const uint8_t* p = bytes.data();
  Hdr h;
  h.src_cid = get_le<uint64_t>(p + kSrcCid);
  h.dst_cid = get_le<uint64_t>(p + kDstCid);
  h.src_port = get_le<uint32_t>(p + kSrcPort);
  h.dst_port = get_le<uint32_t>(p + kDstPort);
  h.len = get_le<uint32_t>(p + kLen);
  h.type = get_le<uint16_t>(p + kType);
  h.op = get_le<uint16_t>(p + kOp);
  h.flags = get_le<uint32_t>(p + kFlags);
  h.buf_alloc = get_le<uint32_t>(p + kBufAlloc);
  h.fwd_cnt = get_le<uint32_t>(p + kFwdCnt);
  return h;
}

std::array<uint8_t, kEventSize> encode_event(uint32_t id) {
  std::array<uint8_t, kEventSize> out{};
  put_le(out.data(), id);
  return out;
}

Result<uint32_t> decode_event(std::span<const uint8_t> bytes) {
  if (bytes.size() < kEventSize)
    return Err(fmt::format("vsock event needs {} bytes, got {}", kEventSize, bytes.size()));
  return get_le<uint32_t>(bytes.data());
}

std::array<uint8_t, kConfigSize> encode_config(uint64_t guest_cid) {
  std::array<uint8_t, kConfigSize> out{};
  put_le(out.data(), guest_cid);
  return out;
}

Result<uint64_t> decode_config(std::span<const uint8_t> bytes) {
  if (bytes.size() < kConfigSize)
    return Err(fmt::format("vsock config needs {} bytes, got {}", kConfigSize, bytes.size()));
  return get_le<uint64_t>(bytes.data());
}

bool is_reserved_cid(uint64_t cid) {
  return cid <= kHostCid || cid == 0xffffffffull || (cid >> 32) != 0;
}

std::string_view op_name(uint16_t op) {
  switch (op) {
#define VHU_X(name, v) \
  case v:              \
    return #name;
    VHU_VSOCK_OPS(VHU_X)
#undef VHU_X
    default:
      return "UNKNOWN";
  }
}

std::string describe(const Hdr& h) {
  return fmt::format("{} {}:{} -> {}:{} type={} len={} flags={:#x} buf_alloc={} fwd_cnt={}", op_name(h.op),
                     h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.type, h.len, h.flags, h.buf_alloc,
                     h.fwd_cnt);
}

}  // namespace vhu::vsock
