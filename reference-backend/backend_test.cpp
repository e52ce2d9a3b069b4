// The vhost-user layer driven in-process, as the fuzzers drive it: messages
// in, replies collected by a sink, no socket.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "backend.h"
#include "device_state.h"
#include "vhu/dirty_log.h"
#include "vhu/features.h"

namespace vsockref {
namespace {

using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;

struct Sink : ReplySink {
  std::vector<vhu::Message> got;
  void send(vhu::Message&& m) override { got.push_back(std::move(m)); }
};

uint32_t id(FrontendReq r) { return static_cast<uint32_t>(r); }

class BackendTest : public ::testing::Test {
 protected:
  EventLoop loop;
  Sink sink;
  Backend b{loop, sink, BackendOptions{}};

  Disposition send(vhu::Message m) { return b.handle(std::move(m)); }
  uint64_t u64_reply() {
    EXPECT_FALSE(sink.got.empty());
    if (sink.got.empty()) return ~0ull;
    vhu::Message m = std::move(sink.got.front());
    sink.got.erase(sink.got.begin());
    EXPECT_TRUE(m.is_reply());
    auto v = vhu::payload_u64(vhu::Plane::Frontend, m);
    EXPECT_TRUE(v.ok());
    return v.ok() ? *v : ~0ull;
  }
  void negotiate(uint64_t p) { send(vhu::Message::request_with(id(FrontendReq::SET_PROTOCOL_FEATURES), p)); }
  vhu::Message with_fd(vhu::Message m) {
    m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    return m;
  }
};

TEST_F(BackendTest, OffersWhatTheIssueAsksFor) {
  send(vhu::Message::empty(id(FrontendReq::GET_PROTOCOL_FEATURES)));
  const uint64_t p = u64_reply();
  for (unsigned bit : {pf::LOG_SHMFD, pf::REPLY_ACK, pf::CONFIG, pf::CONFIGURE_MEM_SLOTS, pf::STATUS, pf::RESET_DEVICE,
                       pf::DEVICE_STATE})
    EXPECT_TRUE(vhu::has_bit(p, bit)) << bit;
  send(vhu::Message::empty(id(FrontendReq::GET_FEATURES)));
  const uint64_t f = u64_reply();
  EXPECT_TRUE(vhu::has_bit(f, vhu::feature::VERSION_1));
  EXPECT_TRUE(vhu::has_bit(f, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES));
  EXPECT_TRUE(vhu::has_bit(f, vhu::feature::LOG_ALL));
}

// QEMU waits for a reply to SET_LOG_BASE (with LOG_SHMFD) without asking for
// one; with need_reply too, that reply is the only one.
TEST_F(BackendTest, SetLogBaseIsAnsweredOnce) {
  auto log = vhu::DirtyLog::create(4096);
  ASSERT_TRUE(log.ok());
  const auto set_log_base = [&](uint64_t size, bool need_reply) {
    vhu::Message m = vhu::Message::request_with(id(FrontendReq::SET_LOG_BASE), vhu::LogPayload{size, 0}, need_reply);
    m.fds.emplace_back(::dup(log->fd().get()));
    return send(std::move(m));
  };
  // Not negotiated: refused, with an answer all the same.
  EXPECT_EQ(set_log_base(4096, false), Disposition::Continue);
  EXPECT_NE(u64_reply(), 0u);
  negotiate(vhu::bit(pf::LOG_SHMFD) | vhu::bit(pf::REPLY_ACK));
  EXPECT_EQ(set_log_base(4096, false), Disposition::Continue);
  EXPECT_EQ(u64_reply(), 0u);
  EXPECT_TRUE(sink.got.empty());
  EXPECT_EQ(set_log_base(4096, true), Disposition::Continue);
  EXPECT_EQ(u64_reply(), 0u);
  EXPECT_TRUE(sink.got.empty());
  // Larger than the file: refused, never mapped (touching it would SIGBUS).
  EXPECT_EQ(set_log_base(8192, false), Disposition::Continue);
  EXPECT_NE(u64_reply(), 0u);
  // No fd at all is malformed.
  EXPECT_EQ(send(vhu::Message::request_with(id(FrontendReq::SET_LOG_BASE), vhu::LogPayload{4096, 0})),
            Disposition::Close);
}

TEST_F(BackendTest, NeedReplyHonouredWithoutGetProtocolFeatures) {
  negotiate(vhu::bit(pf::REPLY_ACK));
  EXPECT_TRUE(sink.got.empty());
  send(vhu::Message::empty(id(FrontendReq::SET_OWNER), true));
  EXPECT_EQ(u64_reply(), 0u);
}

TEST_F(BackendTest, UnknownAndUnnegotiatedRequestsGetAnErrorWhenAsked) {
  EXPECT_EQ(send(vhu::Message::empty(99, true)), Disposition::Continue);
  EXPECT_NE(u64_reply(), 0u);
  send(vhu::Message::empty(99, false));
  EXPECT_TRUE(sink.got.empty());
  // STATUS not negotiated: GET_STATUS still gets an answer (a u64 error).
  send(vhu::Message::empty(id(FrontendReq::GET_STATUS)));
  EXPECT_NE(u64_reply(), 0u);
}

TEST_F(BackendTest, MalformedPayloadClosesTheConnection) {
  vhu::Message m = vhu::Message::empty(id(FrontendReq::SET_VRING_NUM));
  m.set_payload(uint32_t{5});
  EXPECT_EQ(send(std::move(m)), Disposition::Close);
  EXPECT_EQ(send(vhu::Message::request_with(id(FrontendReq::SET_VRING_NUM), vhu::VringState{7, 128})),
            Disposition::Close);
  vhu::Message bad = vhu::Message::empty(id(FrontendReq::GET_FEATURES));
  bad.hdr.flags = 2;  // version 2
  EXPECT_EQ(send(std::move(bad)), Disposition::Close);
}

TEST_F(BackendTest, SurplusFdsAreClosed) {
  int before = 0;
  int fds[3];
  for (int& f : fds) f = ::eventfd(0, EFD_CLOEXEC);
  vhu::Message m = vhu::Message::empty(id(FrontendReq::GET_FEATURES));
  for (int f : fds) m.fds.emplace_back(::dup(f));
  send(std::move(m));
  (void)before;
  u64_reply();
  // The duplicates the back-end got are gone: dup() hands out the lowest free
  // number again.
  int probe = ::dup(fds[0]);
  EXPECT_LT(probe, fds[2] + 2);
  ::close(probe);
  for (int f : fds) ::close(f);
}

TEST_F(BackendTest, RingsEnabledFromTheStartWithoutProtocolFeatures) {
  send(vhu::Message::request_with(id(FrontendReq::SET_FEATURES), vhu::bit(vhu::feature::VERSION_1)));
  EXPECT_TRUE(b.ring(0).enabled);
  EXPECT_TRUE(b.ring(1).enabled);
}

TEST_F(BackendTest, UpstreamTextStartsARingOnItsFirstKick) {
  auto kick = with_fd(vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{1}));
  const int fd = kick.fds[0].get();
  send(std::move(kick));
  b.poll_once();
  EXPECT_FALSE(b.ring(1).started);
  const uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof one), 8);
  b.poll_once();
  EXPECT_TRUE(b.ring(1).started);
}

TEST_F(BackendTest, NoFdFlagStartsAPollingRingAtOnce) {
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{1} | vhu::kVringNoFdFlag));
  EXPECT_TRUE(b.ring(1).started);
}

TEST(BackendNewestText, SetVringKickStartsTheRing) {
  EventLoop loop;
  Sink sink;
  BackendOptions o;
  o.spec = vhu::SpecText::Newest;
  Backend b{loop, sink, o};
  auto kick = vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{1});
  kick.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  b.handle(std::move(kick));
  EXPECT_TRUE(b.ring(1).started);
}

TEST_F(BackendTest, GetVringBaseStopsAndReturnsTheBase) {
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_BASE), vhu::VringState{1, 42}));
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{1} | vhu::kVringNoFdFlag));
  EXPECT_TRUE(b.ring(1).started);
  EXPECT_FALSE(b.suspended());
  send(vhu::Message::request_with(id(FrontendReq::GET_VRING_BASE), vhu::VringState{1, 0}));
  ASSERT_EQ(sink.got.size(), 1u);
  auto s = vhu::payload_vring_state(vhu::Plane::Frontend, sink.got[0]);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->index, 1u);
  EXPECT_EQ(s->num, 42u);
  EXPECT_FALSE(b.ring(1).started);
  EXPECT_TRUE(b.suspended());
}

TEST_F(BackendTest, DisableThenStopIsTolerated) {
  negotiate(vhu::bit(pf::REPLY_ACK));
  send(with_fd(vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{0})));
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_ENABLE), vhu::VringState{0, 1}, true));
  EXPECT_EQ(u64_reply(), 0u);
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_ENABLE), vhu::VringState{0, 0}, true));
  EXPECT_EQ(u64_reply(), 0u);
  EXPECT_EQ(send(vhu::Message::request_with(id(FrontendReq::GET_VRING_BASE), vhu::VringState{0, 0})),
            Disposition::Continue);
  EXPECT_EQ(sink.got.size(), 1u);
}

TEST_F(BackendTest, DeviceStateReplyBits) {
  negotiate(vhu::bit(pf::DEVICE_STATE) | vhu::bit(pf::REPLY_ACK));
  // No fd: error and the invalid-fd flag, never an fd.
  send(vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{0, 0}));
  ASSERT_EQ(sink.got.size(), 1u);
  EXPECT_TRUE(sink.got[0].fds.empty());
  EXPECT_EQ(u64_reply(), 0x101u);
  // Unknown direction, unknown phase.
  send(with_fd(vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{2, 0})));
  EXPECT_EQ(u64_reply() & 0x1ff, 0x101u);
  send(with_fd(vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{0, 1})));
  EXPECT_EQ(u64_reply() & 0x1ff, 0x101u);
  // Save into a pipe: success, no fd of ours.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  vhu::Message save = vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{0, 0});
  save.fds.emplace_back(p[1]);
  send(std::move(save));
  ASSERT_EQ(sink.got.size(), 1u);
  EXPECT_TRUE(sink.got[0].fds.empty());
  EXPECT_EQ(u64_reply(), 0x100u);
  send(vhu::Message::empty(id(FrontendReq::CHECK_DEVICE_STATE)));
  EXPECT_EQ(u64_reply(), 0u);
  std::vector<uint8_t> blob(8192);
  const ssize_t n = ::read(p[0], blob.data(), blob.size());
  ::close(p[0]);
  ASSERT_GT(n, 0);
  blob.resize(static_cast<size_t>(n));
  EXPECT_TRUE(parse_device_state(blob).ok());
}

TEST_F(BackendTest, CheckDeviceStateRepliesWithoutReplyAckAndWaitsForTheLoad) {
  negotiate(vhu::bit(pf::DEVICE_STATE));
  send(vhu::Message::empty(id(FrontendReq::CHECK_DEVICE_STATE)));
  EXPECT_NE(u64_reply(), 0u);  // nothing transferred yet: an error, but an answer
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  vhu::Message load = vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{1, 0});
  load.fds.emplace_back(p[0]);
  send(std::move(load));
  EXPECT_EQ(u64_reply(), 0x100u);
  EXPECT_EQ(send(vhu::Message::empty(id(FrontendReq::CHECK_DEVICE_STATE))), Disposition::Wait);
  EXPECT_TRUE(b.waiting());
  EXPECT_TRUE(sink.got.empty());
  DeviceState s;
  s.guest_cid = 3;
  s.config = {3};
  const auto blob = serialize_device_state(s);
  ASSERT_EQ(::write(p[1], blob.data(), blob.size()), static_cast<ssize_t>(blob.size()));
  b.poll_once();
  EXPECT_TRUE(sink.got.empty());  // no EOF yet
  ::close(p[1]);
  b.poll_once();
  EXPECT_FALSE(b.waiting());
  EXPECT_EQ(u64_reply(), 0u);
  EXPECT_EQ(b.device().reset_state(), VsockDevice::ResetState::Pending);
}

TEST_F(BackendTest, CorruptLoadFailsTheCheck) {
  negotiate(vhu::bit(pf::DEVICE_STATE));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  vhu::Message load = vhu::Message::request_with(id(FrontendReq::SET_DEVICE_STATE_FD), vhu::DeviceStateParams{1, 0});
  load.fds.emplace_back(p[0]);
  send(std::move(load));
  u64_reply();
  ASSERT_EQ(::write(p[1], "garbage", 7), 7);
  ::close(p[1]);
  b.poll_once();
  send(vhu::Message::empty(id(FrontendReq::CHECK_DEVICE_STATE)));
  EXPECT_NE(u64_reply(), 0u);
}

TEST_F(BackendTest, ConfigIsTheCidAndReadOnly) {
  negotiate(vhu::bit(pf::CONFIG) | vhu::bit(pf::REPLY_ACK));
  uint8_t zero[8] = {};
  send(vhu::make_config_message(id(FrontendReq::GET_CONFIG), vhu::ConfigHeader{0, 8, 0}, zero, false));
  ASSERT_EQ(sink.got.size(), 1u);
  auto c = vhu::payload_config(sink.got[0]);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->data[0], 3);
  sink.got.clear();
  uint8_t four[8] = {4};
  vhu::Message set = vhu::make_config_message(id(FrontendReq::SET_CONFIG), vhu::ConfigHeader{0, 8, 0}, four, false);
  set.hdr.flags |= vhu::kFlagNeedReply;
  send(std::move(set));
  EXPECT_NE(u64_reply(), 0u);
  // Past the end: an empty payload.
  send(vhu::make_config_message(id(FrontendReq::GET_CONFIG), vhu::ConfigHeader{4, 8, 0}, zero, false));
  ASSERT_EQ(sink.got.size(), 1u);
  EXPECT_TRUE(sink.got[0].payload.empty());
}

TEST_F(BackendTest, ResetDeviceZeroesStatus) {
  negotiate(vhu::bit(pf::STATUS) | vhu::bit(pf::RESET_DEVICE));
  send(vhu::Message::request_with(id(FrontendReq::SET_FEATURES), Backend::offered_features()));
  send(vhu::Message::request_with(id(FrontendReq::SET_STATUS), uint64_t{8}));
  send(vhu::Message::empty(id(FrontendReq::GET_STATUS)));
  EXPECT_EQ(u64_reply(), 8u);
  send(vhu::Message::empty(id(FrontendReq::RESET_DEVICE)));
  send(vhu::Message::empty(id(FrontendReq::GET_STATUS)));
  EXPECT_EQ(u64_reply(), 0u);
}

}  // namespace
}  // namespace vsockref
