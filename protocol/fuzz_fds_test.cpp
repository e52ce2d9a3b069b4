#include "vhu/fuzz_fds.h"

#include <gtest/gtest.h>

namespace vhu::fuzz {
namespace {

Message msg(FrontendReq r, std::vector<uint8_t> payload) {
  Message m = Message::empty(static_cast<uint32_t>(r));
  m.set_payload_bytes(payload);
  return m;
}

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return {p, p + sizeof v};
}

framing::RecordHeader hdr(uint8_t fds) {
  framing::RecordHeader h{};
  h.fds = fds;
  return h;
}

TEST(FuzzFds, CountFollowsTheRuleOrTheRecord) {
  MemoryTable t{};
  t.nregions = 3;
  EXPECT_EQ(fd_count(hdr(0), msg(FrontendReq::SET_MEM_TABLE, bytes(t))), 3u);
  t.nregions = 1000;  // capped at the table's size
  EXPECT_EQ(fd_count(hdr(0), msg(FrontendReq::SET_MEM_TABLE, bytes(t))), kMaxMemRegions);
  EXPECT_EQ(fd_count(hdr(0), msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(1))), 1u);
  EXPECT_EQ(fd_count(hdr(0), msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(1 | kVringNoFdFlag))), 0u);
  EXPECT_EQ(fd_count(hdr(0), msg(FrontendReq::GET_FEATURES, {})), 0u);
  EXPECT_EQ(fd_count(hdr(0), msg(static_cast<FrontendReq>(999), {})), 0u);
  // n > 0: exactly n - 1, at most kMaxFds, whatever the request takes.
  EXPECT_EQ(fd_count(hdr(1), msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(1))), 0u);
  EXPECT_EQ(fd_count(hdr(4), msg(FrontendReq::GET_FEATURES, {})), 3u);
  EXPECT_EQ(fd_count(hdr(200), msg(FrontendReq::GET_FEATURES, {})), kMaxFds);
}

// A raw record has no request to take a rule from: only what it names.
TEST(FuzzFds, RawRecordsGetOnlyTheFdsTheyName) {
  EXPECT_EQ(named_fd_count(hdr(0)), 0u);
  EXPECT_EQ(named_fd_count(hdr(1)), 0u);
  EXPECT_EQ(named_fd_count(hdr(4)), 3u);
  EXPECT_EQ(named_fd_count(hdr(200)), kMaxFds);
}

TEST(FuzzFds, KindFollowsThePayload) {
  MemoryTable t{};
  t.nregions = 2;
  t.regions[1] = MemoryRegion{0, 0x200000, 0, 0x100000};
  const FdPlan region = plan_fd(msg(FrontendReq::SET_MEM_TABLE, bytes(t)), 1);
  EXPECT_EQ(region.kind, FdKind::Memfd);
  EXPECT_EQ(region.memfd_bytes, 0x300000u);  // mmap_offset + memory_size
  // A size that wraps or exceeds the cap gets a file of the cap, and the back-end refuses to map it.
  t.regions[0] = MemoryRegion{0, ~0ull, 0, 2};
  EXPECT_EQ(plan_fd(msg(FrontendReq::SET_MEM_TABLE, bytes(t)), 0).memfd_bytes, kMaxMemfdBytes);
  // Short payloads read as zeros: a one-byte file, never an empty one.
  EXPECT_EQ(plan_fd(msg(FrontendReq::ADD_MEM_REG, {}), 0).memfd_bytes, 1u);

  DeviceStateParams load{kTransferLoad, 0}, save{0, 0};
  EXPECT_EQ(plan_fd(msg(FrontendReq::SET_DEVICE_STATE_FD, bytes(load)), 0).kind, FdKind::StatePipe);
  EXPECT_TRUE(plan_fd(msg(FrontendReq::SET_DEVICE_STATE_FD, bytes(load)), 0).load);
  EXPECT_FALSE(plan_fd(msg(FrontendReq::SET_DEVICE_STATE_FD, bytes(save)), 0).load);

  const FdPlan kick = plan_fd(msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(2)), 0);
  EXPECT_EQ(kick.kind, FdKind::Eventfd);
  ASSERT_TRUE(kick.kick_ring.has_value());
  EXPECT_EQ(*kick.kick_ring, 2);
  EXPECT_FALSE(plan_fd(msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(7)), 0).kick_ring.has_value());
  EXPECT_FALSE(plan_fd(msg(FrontendReq::SET_VRING_CALL, bytes<uint64_t>(0)), 0).kick_ring.has_value());
}

TEST(FuzzFds, AuxBitsPutTheWrongKindWhereAnEventfdBelongs) {
  const Message kick = msg(FrontendReq::SET_VRING_KICK, bytes<uint64_t>(1));
  const FdPlan hung = plan_fd(kick, 0, framing::kAuxHungUp);
  EXPECT_EQ(hung.kind, FdKind::HungUpPipe);
  EXPECT_FALSE(hung.kick_ring.has_value());  // nothing for kActionKick to write to
  EXPECT_EQ(plan_fd(kick, 0, framing::kAuxRegularFile | framing::kAuxHungUp).kind, FdKind::RegularFile);
  EXPECT_EQ(plan_fd(kick, 0, framing::kAuxSignal).kind, FdKind::Eventfd);
  // Memory and state fds keep their kind: the bits are about eventfds only.
  EXPECT_EQ(plan_fd(msg(FrontendReq::ADD_MEM_REG, {}), 0, framing::kAuxRegularFile).kind, FdKind::Memfd);
  DeviceStateParams load{kTransferLoad, 0};
  EXPECT_EQ(plan_fd(msg(FrontendReq::SET_DEVICE_STATE_FD, bytes(load)), 0, framing::kAuxHungUp).kind,
            FdKind::StatePipe);
}

}  // namespace
}  // namespace vhu::fuzz
