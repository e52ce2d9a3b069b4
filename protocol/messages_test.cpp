#include "vhu/messages.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

namespace vhu {
namespace {

Message with_fds(Message m, int n) {
  for (int i = 0; i < n; ++i) m.fds.emplace_back(eventfd(0, EFD_CLOEXEC));
  return m;
}

Message table(uint32_t n, size_t regions_in_payload) {
  std::vector<uint8_t> body(8 + regions_in_payload * sizeof(MemoryRegion), 0);
  std::memcpy(body.data(), &n, 4);
  Message m = Message::empty(static_cast<uint32_t>(FrontendReq::SET_MEM_TABLE));
  m.set_payload_bytes(body);
  return m;
}

TEST(Messages, NamesComeFromTheTable) {
  EXPECT_EQ(request_name(FrontendReq::SET_DEVICE_STATE_FD), "SET_DEVICE_STATE_FD");
  EXPECT_EQ(request_name(BackendReq::BACKEND_VRING_CALL), "BACKEND_VRING_CALL");
  EXPECT_EQ(request_name(Plane::Frontend, 999), "UNKNOWN(999)");
  EXPECT_EQ(request_info(Plane::Frontend, 0), nullptr);
}

TEST(Messages, OwnReplyMatchesTheSpecList) {
  // vhost-user.rst "Communication": requests that have replies of their own.
  for (auto r : {FrontendReq::GET_FEATURES, FrontendReq::GET_PROTOCOL_FEATURES, FrontendReq::GET_VRING_BASE,
                 FrontendReq::GET_CONFIG, FrontendReq::GET_STATUS, FrontendReq::SET_DEVICE_STATE_FD,
                 FrontendReq::CHECK_DEVICE_STATE, FrontendReq::GET_MAX_MEM_SLOTS})
    EXPECT_TRUE(request_info(Plane::Frontend, static_cast<uint32_t>(r))->has_own_reply()) << request_name(r);
  for (auto r : {FrontendReq::SET_FEATURES, FrontendReq::SET_OWNER, FrontendReq::SET_MEM_TABLE,
                 FrontendReq::SET_VRING_ENABLE, FrontendReq::SET_VRING_KICK, FrontendReq::RESET_DEVICE,
                 FrontendReq::ADD_MEM_REG, FrontendReq::SET_STATUS})
    EXPECT_FALSE(request_info(Plane::Frontend, static_cast<uint32_t>(r))->has_own_reply()) << request_name(r);
}

TEST(Messages, RequestAndReplyFlags) {
  Message req = Message::request_with(static_cast<uint32_t>(FrontendReq::SET_FEATURES), uint64_t{1}, true);
  EXPECT_EQ(req.hdr.flags, kVersion | kFlagNeedReply);
  EXPECT_EQ(req.hdr.size, 8u);
  Message rep = Message::reply_to(req, uint64_t{0});
  EXPECT_EQ(rep.hdr.request, req.hdr.request);
  EXPECT_EQ(rep.hdr.flags, kVersion | kFlagReply);
  EXPECT_TRUE(rep.is_reply());
  EXPECT_FALSE(rep.need_reply());
}

TEST(Messages, RejectsWrongVersion) {
  Message m = Message::empty(1);
  m.hdr.flags = 0x2;
  EXPECT_FALSE(check_header_version(m).ok());
  m.hdr.flags = kVersion | kFlagNeedReply;
  EXPECT_TRUE(check_header_version(m).ok());
}

TEST(Messages, FixedPayloadSizesAreExact) {
  Message m = Message::empty(static_cast<uint32_t>(FrontendReq::SET_FEATURES));
  m.set_payload_bytes(std::vector<uint8_t>(4));
  auto r = payload_u64(Plane::Frontend, m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("SET_FEATURES"), std::string::npos) << r.message();
  m.set_payload_bytes(std::vector<uint8_t>(9));
  EXPECT_FALSE(payload_u64(Plane::Frontend, m).ok());
  m.set_payload_bytes(std::vector<uint8_t>(8));
  EXPECT_TRUE(payload_u64(Plane::Frontend, m).ok());
  EXPECT_FALSE(payload_vring_addr(m).ok());
}

TEST(Messages, MemoryTableSizes) {
  EXPECT_TRUE(payload_memory_table(table(2, 2)).ok());
  EXPECT_TRUE(payload_memory_table(table(2, 8)).ok());  // full-size body
  EXPECT_FALSE(payload_memory_table(table(2, 1)).ok());
  EXPECT_FALSE(payload_memory_table(table(2, 3)).ok());
  EXPECT_FALSE(payload_memory_table(table(9, 8)).ok());
  Message tiny = Message::empty(static_cast<uint32_t>(FrontendReq::SET_MEM_TABLE));
  tiny.set_payload_bytes(std::vector<uint8_t>(4));
  EXPECT_FALSE(payload_memory_table(tiny).ok());
}

TEST(Messages, GpaEndIsTheHighestRegionEndWhateverTheOrder) {
  EXPECT_EQ(gpa_end({}), 0u);
  const std::vector<MemoryRegion> r{{0x1'0000'0000, 0x20'0000, 0x7000'0000, 0}, {0, 0x10'0000, 0x8000'0000, 0}};
  EXPECT_EQ(gpa_end(r), 0x1'0020'0000u);
}

TEST(Messages, ConfigSizes) {
  const uint8_t data[8] = {3, 0, 0, 0, 0, 0, 0, 0};
  Message m = make_config_message(static_cast<uint32_t>(FrontendReq::GET_CONFIG), {0, 8, 0}, data, true);
  auto c = payload_config(m);
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(c->data.size(), 8u);
  EXPECT_TRUE(m.is_reply());
  m.payload.pop_back();
  EXPECT_FALSE(payload_config(m).ok());
  Message big = make_config_message(static_cast<uint32_t>(FrontendReq::SET_CONFIG), {0, 300, 0},
                                    std::vector<uint8_t>(300), false);
  EXPECT_FALSE(payload_config(big).ok());
}

TEST(Messages, FdCountRules) {
  const auto call = static_cast<uint32_t>(FrontendReq::SET_VRING_CALL);
  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(call, uint64_t{1}), 1)).ok());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(call, uint64_t{1}), 0)).ok());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(call, uint64_t{1}), 2)).ok());
  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(call, kVringNoFdFlag | 1), 0)).ok());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(call, kVringNoFdFlag | 1), 1)).ok());

  auto owner = with_fds(Message::empty(static_cast<uint32_t>(FrontendReq::SET_OWNER)), 1);
  auto r = check_fd_count(Plane::Frontend, owner);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("SET_OWNER"), std::string::npos);

  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(table(2, 2), 2)).ok());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, with_fds(table(2, 2), 1)).ok());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, with_fds(Message::empty(77), 1)).ok());

  const auto rem = static_cast<uint32_t>(FrontendReq::REM_MEM_REG);
  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(rem, MemRegionMsg{}), 1)).ok());
  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(Message::request_with(rem, MemRegionMsg{}), 0)).ok());

  // SET_DEVICE_STATE_FD reply: zero or one fd.
  Message ds = Message::request_with(static_cast<uint32_t>(FrontendReq::SET_DEVICE_STATE_FD), DeviceStateParams{});
  Message rep = Message::reply_to(ds, uint64_t{0});
  EXPECT_TRUE(check_fd_count(Plane::Frontend, with_fds(std::move(rep), 1)).ok());
}

TEST(Messages, DescribeDecodes) {
  VringAddr a{1, 0, 0x1000, 0x3000, 0x2000, 0};
  const std::string s = describe(Plane::Frontend, Message::request_with(9, a, true));
  EXPECT_NE(s.find("SET_VRING_ADDR need_reply"), std::string::npos) << s;
  EXPECT_NE(s.find("desc=0x1000"), std::string::npos) << s;
  Message ack = Message::reply_to(Message::empty(3), uint64_t{0});
  EXPECT_EQ(describe(Plane::Frontend, ack), "SET_OWNER reply ack=0x0");
  Message ds = Message::request_with(42, DeviceStateParams{kTransferLoad, kPhaseStopped});
  EXPECT_EQ(describe(Plane::Frontend, ds), "SET_DEVICE_STATE_FD {direction=load phase=stopped}");
  EXPECT_EQ(describe(Plane::Frontend, Message::empty(200)), "UNKNOWN(200)");
}

TEST(Features, MaskStrings) {
  EXPECT_EQ(virtio_features_string(bit(feature::VERSION_1) | bit(feature::VSOCK_F_STREAM)), "VSOCK_F_STREAM|VERSION_1");
  EXPECT_EQ(protocol_features_string(bit(3) | bit(19) | bit(50)), "REPLY_ACK|DEVICE_STATE|bit50");
  EXPECT_EQ(protocol_features_string(0), "0");
  EXPECT_EQ(protocol_features_in(SpecText::Upstream), 0xfffffull);
  EXPECT_EQ(protocol_features_in(SpecText::Newest), 0xffffffull);
}

}  // namespace
}  // namespace vhu
