// Virtio and vhost-user feature bits. Each list below is the single source of
// the bit numbers and their printable names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace vhu {

// X(name, bit) — virtio transport/ring bits and the vhost-user reuse of bit 30.
#define VHU_VIRTIO_FEATURES(X)      \
  X(NOTIFY_ON_EMPTY, 24)            \
  X(ANY_LAYOUT, 27)                 \
  X(RING_INDIRECT_DESC, 28)         \
  X(RING_EVENT_IDX, 29)             \
  X(VHOST_USER_F_PROTOCOL_FEATURES, 30) \
  X(VERSION_1, 32)                  \
  X(ACCESS_PLATFORM, 33)            \
  X(RING_PACKED, 34)                \
  X(IN_ORDER, 35)                   \
  X(ORDER_PLATFORM, 36)             \
  X(SR_IOV, 37)                     \
  X(NOTIFICATION_DATA, 38)          \
  X(RING_RESET, 40)                 \
  X(LOG_ALL, 26)

// X(name, bit) — virtio-vsock device bits (virtio 1.3, 5.10.3).
#define VHU_VSOCK_FEATURES(X) \
  X(VSOCK_F_STREAM, 0)        \
  X(VSOCK_F_SEQPACKET, 1)     \
  X(VSOCK_F_NO_IMPLIED_STREAM, 2)

// X(name, bit, spec text that defines it) — VHOST_USER_PROTOCOL_F_*.
// Upstream = QEMU upstream f6b615b (ids to 19); Newest = the newer mirror copy.
#define VHU_PROTOCOL_FEATURES(X)          \
  X(MQ, 0, Upstream)                      \
  X(LOG_SHMFD, 1, Upstream)               \
  X(RARP, 2, Upstream)                    \
  X(REPLY_ACK, 3, Upstream)               \
  X(MTU, 4, Upstream)                     \
  X(BACKEND_REQ, 5, Upstream)             \
  X(CROSS_ENDIAN, 6, Upstream)            \
  X(CRYPTO_SESSION, 7, Upstream)          \
  X(PAGEFAULT, 8, Upstream)               \
  X(CONFIG, 9, Upstream)                  \
  X(BACKEND_SEND_FD, 10, Upstream)        \
  X(HOST_NOTIFIER, 11, Upstream)          \
  X(INFLIGHT_SHMFD, 12, Upstream)         \
  X(RESET_DEVICE, 13, Upstream)           \
  X(INBAND_NOTIFICATIONS, 14, Upstream)   \
  X(CONFIGURE_MEM_SLOTS, 15, Upstream)    \
  X(STATUS, 16, Upstream)                 \
  X(XEN_MMAP, 17, Upstream)               \
  X(SHARED_OBJECT, 18, Upstream)          \
  X(DEVICE_STATE, 19, Upstream)           \
  X(GET_VRING_BASE_INFLIGHT, 20, Newest)  \
  X(GPA_ADDRESSES, 21, Newest)            \
  X(SHMEM, 22, Newest)                    \
  X(GET_VRING_BASE_SKIP_DRAIN, 23, Newest)

// Which copy of vhost-user.rst a definition or rule comes from (see INTEROP.md).
enum class SpecText : uint8_t { Upstream, Newest };

namespace feature {
#define VHU_X(name, bit) inline constexpr unsigned name = bit;
VHU_VIRTIO_FEATURES(VHU_X)
VHU_VSOCK_FEATURES(VHU_X)
#undef VHU_X
}  // namespace feature

namespace protocol_feature {
#define VHU_X(name, bit, text) inline constexpr unsigned name = bit;
VHU_PROTOCOL_FEATURES(VHU_X)
#undef VHU_X
}  // namespace protocol_feature

// The device status byte (virtio 2.1), as GET_STATUS and SET_STATUS carry it.
namespace status {
inline constexpr uint8_t ACKNOWLEDGE = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, DEVICE_NEEDS_RESET = 0x40,
                         FAILED = 0x80;
}  // namespace status

constexpr uint64_t bit(unsigned n) { return uint64_t{1} << n; }
constexpr bool has_bit(uint64_t mask, unsigned n) { return n < 64 && (mask >> n) & 1; }

// Names of the bits set in a mask, e.g. "RING_EVENT_IDX|VERSION_1|bit55".
// Device bits (below 24) are named as vsock bits when `vsock` is true.
std::string virtio_features_string(uint64_t mask, bool vsock = true);
std::string protocol_features_string(uint64_t mask);

// Name of one bit, or empty when the list has none.
std::string_view virtio_feature_name(unsigned bit, bool vsock = true);
std::string_view protocol_feature_name(unsigned bit);
// The text that defines a protocol feature bit; nullopt-like Upstream for unknown bits.
bool protocol_feature_known(unsigned bit);
SpecText protocol_feature_text(unsigned bit);

// Mask of protocol features defined in a given spec text.
uint64_t protocol_features_in(SpecText text);

}  // namespace vhu
