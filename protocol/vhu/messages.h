// vhost-user message ids, wire layouts and the per-request metadata table.
// VHU_FRONTEND_REQUESTS / VHU_BACKEND_REQUESTS are the one list of request ids:
// enums, names, payload and fd rules are all generated from them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vhu/features.h"
#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vhu {

// What a payload holds, so sizes can be checked and messages decoded.
enum class PayloadKind : uint8_t {
  None,
  U64,
  VringState,
  VringAddr,
  MemoryTable,
  MemRegion,
  Log,
  Iotlb,
  Config,
  Inflight,
  Shared,
  DeviceStateParams,
  VringArea,
  MMap,
  ShmemConfig,
  Opaque,  // layouts this project never interprets (crypto sessions)
};

// Which file descriptors may ride with a message.
enum class FdRule : uint8_t {
  None,         // none
  One,          // exactly one
  OptionalOne,  // zero or one
  VringFd,      // one, or none when the u64 payload has the no-fd flag (bit 8)
  Regions,      // one per memory region (SET_MEM_TABLE)
};

// X(NAME, id, request payload, request fds, reply payload, reply fds, text)
// A reply payload of None means the request has no reply of its own: with
// need_reply set and REPLY_ACK negotiated, it is answered with a u64 ack.
#define VHU_FRONTEND_REQUESTS(X)                                                   \
  X(GET_FEATURES, 1, None, None, U64, None, Upstream)                              \
  X(SET_FEATURES, 2, U64, None, None, None, Upstream)                              \
  X(SET_OWNER, 3, None, None, None, None, Upstream)                                \
  X(RESET_OWNER, 4, None, None, None, None, Upstream)                              \
  X(SET_MEM_TABLE, 5, MemoryTable, Regions, None, None, Upstream)                  \
  X(SET_LOG_BASE, 6, Log, One, U64, None, Upstream)                                \
  X(SET_LOG_FD, 7, None, One, None, None, Upstream)                                \
  X(SET_VRING_NUM, 8, VringState, None, None, None, Upstream)                      \
  X(SET_VRING_ADDR, 9, VringAddr, None, None, None, Upstream)                      \
  X(SET_VRING_BASE, 10, VringState, None, None, None, Upstream)                    \
  X(GET_VRING_BASE, 11, VringState, None, VringState, None, Upstream)              \
  X(SET_VRING_KICK, 12, U64, VringFd, None, None, Upstream)                        \
  X(SET_VRING_CALL, 13, U64, VringFd, None, None, Upstream)                        \
  X(SET_VRING_ERR, 14, U64, VringFd, None, None, Upstream)                         \
  X(GET_PROTOCOL_FEATURES, 15, None, None, U64, None, Upstream)                    \
  X(SET_PROTOCOL_FEATURES, 16, U64, None, None, None, Upstream)                    \
  X(GET_QUEUE_NUM, 17, None, None, U64, None, Upstream)                            \
  X(SET_VRING_ENABLE, 18, VringState, None, None, None, Upstream)                  \
  X(SEND_RARP, 19, U64, None, None, None, Upstream)                                \
  X(NET_SET_MTU, 20, U64, None, None, None, Upstream)                              \
  X(SET_BACKEND_REQ_FD, 21, None, One, None, None, Upstream)                       \
  X(IOTLB_MSG, 22, Iotlb, None, U64, None, Upstream)                               \
  X(SET_VRING_ENDIAN, 23, VringState, None, None, None, Upstream)                  \
  X(GET_CONFIG, 24, Config, None, Config, None, Upstream)                          \
  X(SET_CONFIG, 25, Config, None, None, None, Upstream)                            \
  X(CREATE_CRYPTO_SESSION, 26, Opaque, None, Opaque, None, Upstream)               \
  X(CLOSE_CRYPTO_SESSION, 27, U64, None, None, None, Upstream)                     \
  X(POSTCOPY_ADVISE, 28, None, None, None, One, Upstream)                          \
  X(POSTCOPY_LISTEN, 29, None, None, None, None, Upstream)                         \
  X(POSTCOPY_END, 30, None, None, U64, None, Upstream)                             \
  X(GET_INFLIGHT_FD, 31, Inflight, None, Inflight, One, Upstream)                  \
  X(SET_INFLIGHT_FD, 32, Inflight, One, None, None, Upstream)                      \
  X(GPU_SET_SOCKET, 33, None, One, None, None, Upstream)                           \
  X(RESET_DEVICE, 34, None, None, None, None, Upstream)                            \
  X(VRING_KICK, 35, VringState, None, None, None, Upstream)                        \
  X(GET_MAX_MEM_SLOTS, 36, None, None, U64, None, Upstream)                        \
  X(ADD_MEM_REG, 37, MemRegion, One, None, None, Upstream)                         \
  X(REM_MEM_REG, 38, MemRegion, OptionalOne, None, None, Upstream)                 \
  X(SET_STATUS, 39, U64, None, None, None, Upstream)                               \
  X(GET_STATUS, 40, None, None, U64, None, Upstream)                               \
  X(GET_SHARED_OBJECT, 41, Shared, None, U64, One, Upstream)                       \
  X(SET_DEVICE_STATE_FD, 42, DeviceStateParams, One, U64, OptionalOne, Upstream)   \
  X(CHECK_DEVICE_STATE, 43, None, None, U64, None, Upstream)                       \
  X(GET_SHMEM_CONFIG, 44, None, None, ShmemConfig, None, Newest)                   \
  X(GET_VRING_BASE_SKIP_DRAIN, 45, VringState, None, VringState, None, Newest)

// Requests the back-end sends on the BACKEND_REQ channel; same columns.
#define VHU_BACKEND_REQUESTS(X)                                                    \
  X(BACKEND_IOTLB_MSG, 1, Iotlb, None, None, None, Upstream)                       \
  X(BACKEND_CONFIG_CHANGE_MSG, 2, None, None, None, None, Upstream)                \
  X(BACKEND_VRING_HOST_NOTIFIER_MSG, 3, VringArea, OptionalOne, None, None, Upstream) \
  X(BACKEND_VRING_CALL, 4, VringState, None, None, None, Upstream)                 \
  X(BACKEND_VRING_ERR, 5, VringState, None, None, None, Upstream)                  \
  X(BACKEND_SHARED_OBJECT_ADD, 6, Shared, None, None, None, Upstream)              \
  X(BACKEND_SHARED_OBJECT_REMOVE, 7, Shared, None, None, None, Upstream)           \
  X(BACKEND_SHARED_OBJECT_LOOKUP, 8, Shared, None, U64, One, Upstream)             \
  X(BACKEND_SHMEM_MAP, 9, MMap, One, None, None, Newest)                           \
  X(BACKEND_SHMEM_UNMAP, 10, MMap, None, None, None, Newest)

enum class FrontendReq : uint32_t {
#define VHU_X(name, id, ...) name = id,
  VHU_FRONTEND_REQUESTS(VHU_X)
#undef VHU_X
};

enum class BackendReq : uint32_t {
#define VHU_X(name, id, ...) name = id,
  VHU_BACKEND_REQUESTS(VHU_X)
#undef VHU_X
};

// The two request planes: a socket carries front-end requests and their
// replies (the main socket) or back-end requests and theirs (BACKEND_REQ).
enum class Plane : uint8_t { Frontend, Backend };

struct RequestInfo {
  uint32_t id;
  std::string_view name;
  PayloadKind request;
  FdRule request_fds;
  PayloadKind reply;
  FdRule reply_fds;
  SpecText text;

  bool has_own_reply() const { return reply != PayloadKind::None || reply_fds != FdRule::None; }
};

// nullptr for an id the list does not have.
const RequestInfo* request_info(Plane plane, uint32_t id);
std::span<const RequestInfo> all_requests(Plane plane);
// "SET_MEM_TABLE" or "UNKNOWN(77)".
std::string request_name(Plane plane, uint32_t id);
inline std::string request_name(FrontendReq r) { return request_name(Plane::Frontend, static_cast<uint32_t>(r)); }
inline std::string request_name(BackendReq r) { return request_name(Plane::Backend, static_cast<uint32_t>(r)); }
std::string_view payload_kind_name(PayloadKind k);

// ---- wire layouts (native byte order, as the spec says) ----

inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;

inline constexpr size_t kMaxMemRegions = 8;    // in one SET_MEM_TABLE
inline constexpr size_t kMaxFds = 8;           // per message
inline constexpr uint32_t kMaxConfigSize = 256;  // config payload data bytes

// u64 payload of SET_VRING_KICK/CALL/ERR.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdFlag = 0x100;
// SET_VRING_ADDR flags.
inline constexpr uint32_t kVringFlagLog = 0x1;
// SET_DEVICE_STATE_FD reply u64.
inline constexpr uint64_t kDeviceStateErrorMask = 0xff;
inline constexpr uint64_t kDeviceStateInvalidFd = 0x100;
inline constexpr uint32_t kTransferSave = 0;
inline constexpr uint32_t kTransferLoad = 1;
inline constexpr uint32_t kPhaseStopped = 0;
// GET_CONFIG / SET_CONFIG flags.
inline constexpr uint32_t kConfigFlagWritable = 0;
inline constexpr uint32_t kConfigFlagLiveMigration = 1;

struct Header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};

struct VringState {
  uint32_t index;
  uint32_t num;
};

struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};

struct MemoryRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};

// One past the highest guest-physical address of `regions` (0 for none): the
// end of what a dirty log must cover ("from address 0 to the maximum of guest
// regions").
uint64_t gpa_end(std::span<const MemoryRegion> regions);

struct MemoryTable {
  uint32_t nregions;
  uint32_t padding;
  MemoryRegion regions[kMaxMemRegions];
};

struct MemRegionMsg {
  uint64_t padding;
  MemoryRegion region;
};

struct LogPayload {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};

struct IotlbMsg {
  uint64_t iova;
  uint64_t size;
  uint64_t uaddr;
  uint8_t perm;
  uint8_t type;
};

struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
};

struct InflightPayload {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
};

struct SharedObject {
  uint8_t uuid[16];
};

struct DeviceStateParams {
  uint32_t direction;
  uint32_t phase;
};

struct VringArea {
  uint64_t u64;
  uint64_t size;
  uint64_t offset;
};

struct MMapRequest {
  uint8_t shmid;
  uint8_t padding[7];
  uint64_t fd_offset;
  uint64_t shm_offset;
  uint64_t len;
  uint64_t flags;
};

static_assert(sizeof(Header) == 12);
static_assert(sizeof(VringState) == 8);
static_assert(sizeof(VringAddr) == 40);
static_assert(sizeof(MemoryRegion) == 32);
static_assert(sizeof(MemoryTable) == 8 + 8 * 32);
static_assert(sizeof(MemRegionMsg) == 40);
static_assert(sizeof(LogPayload) == 16);
static_assert(sizeof(IotlbMsg) == 32);  // struct vhost_iotlb_msg, padded as the kernel's
static_assert(sizeof(ConfigHeader) == 12);
static_assert(sizeof(InflightPayload) == 24);  // QEMU sends the padded struct
static_assert(sizeof(DeviceStateParams) == 8);
static_assert(sizeof(VringArea) == 24);
static_assert(sizeof(MMapRequest) == 40);

// Exact payload size for fixed layouts; nullopt for variable ones
// (MemoryTable, Config, ShmemConfig, Opaque) and 0 for None.
std::optional<size_t> fixed_payload_size(PayloadKind k);

// One message and the descriptors that travelled with it.
struct Message {
  Header hdr{};
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;

  uint32_t request() const { return hdr.request; }
  bool is_reply() const { return (hdr.flags & kFlagReply) != 0; }
  bool need_reply() const { return (hdr.flags & kFlagNeedReply) != 0; }

  // A request (flags = version, plus need_reply when asked) with a POD body.
  template <class T>
  static Message request_with(uint32_t request, const T& body, bool need_reply = false) {
    Message m = empty(request, need_reply);
    m.set_payload(body);
    return m;
  }
  static Message empty(uint32_t request, bool need_reply = false) {
    Message m;
    m.hdr.request = request;
    m.hdr.flags = kVersion | (need_reply ? kFlagNeedReply : 0);
    return m;
  }
  // A reply to `req`: same request id, version and the reply flag.
  template <class T>
  static Message reply_to(const Message& req, const T& body) {
    Message m;
    m.hdr.request = req.hdr.request;
    m.hdr.flags = kVersion | kFlagReply;
    m.set_payload(body);
    return m;
  }

  template <class T>
  void set_payload(const T& body) {
    static_assert(std::is_trivially_copyable_v<T>);
    set_payload_bytes({reinterpret_cast<const uint8_t*>(&body), sizeof(T)});
  }
  void set_payload_bytes(std::span<const uint8_t> bytes) {
    payload.assign(bytes.begin(), bytes.end());
    hdr.size = static_cast<uint32_t>(payload.size());
  }
};

// Typed payload access. Errors name the request, the expected and the real size.
Result<uint64_t> payload_u64(Plane plane, const Message& m);
Result<VringState> payload_vring_state(Plane plane, const Message& m);
Result<VringAddr> payload_vring_addr(const Message& m);
Result<MemRegionMsg> payload_mem_region(const Message& m);
Result<DeviceStateParams> payload_device_state(const Message& m);
Result<InflightPayload> payload_inflight(const Message& m);
Result<LogPayload> payload_log(const Message& m);
// SET_MEM_TABLE: nregions <= 8 and size covers exactly nregions regions
// (a full 8-region body is accepted too, as some front-ends send it).
Result<std::vector<MemoryRegion>> payload_memory_table(const Message& m);
// GET_CONFIG / SET_CONFIG: header plus exactly `size` data bytes, size <= 256.
struct ConfigPayload {
  ConfigHeader hdr;
  std::vector<uint8_t> data;
};
Result<ConfigPayload> payload_config(const Message& m);
Message make_config_message(uint32_t request, const ConfigHeader& hdr, std::span<const uint8_t> data,
                            bool reply);

// Checks the number of fds against the request's FdRule (for a reply when
// m.is_reply()). Unknown requests must carry none.
Result<void> check_fd_count(Plane plane, const Message& m);

// Header flags: version 1, no unknown bits? Returns a description of the problem.
Result<void> check_header_version(const Message& m);

// One line a person can read: "SET_VRING_ADDR need_reply {index=1 flags=0 desc=0x... }" with fd count.
std::string describe(Plane plane, const Message& m);

}  // namespace vhu
