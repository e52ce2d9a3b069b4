#include "vhu/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace vhu {
namespace {

constexpr uint32_t id(FrontendReq r) { return static_cast<uint32_t>(r); }

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  if (fstat(a, &sa) != 0 || fstat(b, &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

UniqueFd make_eventfd() { return UniqueFd(eventfd(0, EFD_CLOEXEC)); }

// Two connected channels: `front` sends requests, `back` receives them.
struct Pair {
  Channel front;
  Channel back;
};

Pair make_pair(ChannelLimits back_limits = {}, Plane plane = Plane::Frontend) {
  auto sp = socket_pair();
  EXPECT_TRUE(sp.ok());
  return Pair{Channel(std::move(sp->first), plane), Channel(std::move(sp->second), plane, back_limits)};
}

std::vector<uint8_t> raw(uint32_t request, uint32_t size, std::vector<uint8_t> payload = {},
                         uint32_t flags = kVersion) {
  // Sized once and filled with memcpy: g++ 12 at -O3 reports a false
  // -Warray-bounds on vector::insert after a 12-byte vector.
  std::vector<uint8_t> out(sizeof(Header) + payload.size());
  const Header h{request, flags, size};
  std::memcpy(out.data(), &h, sizeof(h));
  if (!payload.empty()) std::memcpy(out.data() + sizeof(h), payload.data(), payload.size());
  return out;
}

std::vector<uint8_t> table_payload(uint32_t nregions) {
  MemoryTable t{};
  t.nregions = nregions;
  for (uint32_t i = 0; i < nregions; ++i) t.regions[i] = MemoryRegion{i * 0x1000ull, 0x1000, 0, 0};
  std::vector<uint8_t> out(8 + nregions * sizeof(MemoryRegion));
  std::memcpy(out.data(), &t, out.size());
  return out;
}

std::vector<uint8_t> u64_payload(uint64_t v) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &v, 8);
  return out;
}

// A message the receiver must still frame correctly after a rejection.
void expect_still_framed(Pair& p) {
  ASSERT_TRUE(p.front.send(Message::empty(id(FrontendReq::GET_FEATURES))).ok());
  auto m = p.back.recv(1000);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->hdr.request, id(FrontendReq::GET_FEATURES));
  EXPECT_TRUE(m->fds.empty());
}

// ---- rejection scenarios, each also run by the fd-leak test ----

void oversized_payload() {
  Pair p = make_pair(ChannelLimits{.max_payload = 4096});
  ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_MEM_TABLE), 5000, std::vector<uint8_t>(16, 0xab))).ok());
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  EXPECT_NE(m.message().find("SET_MEM_TABLE"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("5000"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("4096"), std::string::npos) << m.message();
  // Not one payload byte was consumed.
  uint8_t buf[64];
  EXPECT_EQ(::recv(p.back.fd(), buf, sizeof(buf), MSG_DONTWAIT), 16);
}

void truncated_header() {
  Pair p = make_pair();
  auto bytes = raw(id(FrontendReq::SET_OWNER), 0);
  ASSERT_TRUE(p.front.send_raw(std::span(bytes).first(6)).ok());
  p.front.close();
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  EXPECT_NE(m.message().find("SET_OWNER"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("6 of 12"), std::string::npos) << m.message();
}

void truncated_payload() {
  Pair p = make_pair();
  ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_FEATURES), 8, {1, 2, 3})).ok());
  p.front.close();
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  EXPECT_NE(m.message().find("SET_FEATURES"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("3 of 8"), std::string::npos) << m.message();
}

void truncated_header_with_fds() {
  Pair p = make_pair();
  UniqueFd e = make_eventfd();
  const int fds[] = {e.get()};
  auto bytes = raw(id(FrontendReq::SET_VRING_CALL), 8);
  ASSERT_TRUE(p.front.send_raw(std::span(bytes).first(2), fds).ok());
  p.front.close();
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  EXPECT_NE(m.message().find("2 of 12"), std::string::npos) << m.message();
}

void too_many_fds() {
  Pair p = make_pair();
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 10; ++i) {
    owned.push_back(make_eventfd());
    fds.push_back(owned.back().get());
  }
  const auto body = table_payload(8);
  ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_MEM_TABLE), static_cast<uint32_t>(body.size()), body), fds)
                  .ok());
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Invalid);
  EXPECT_NE(m.message().find("SET_MEM_TABLE"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("10"), std::string::npos) << m.message();
  expect_still_framed(p);
}

void fds_over_configured_limit() {
  Pair p = make_pair(ChannelLimits{.max_fds = 1});
  Message m = Message::empty(id(FrontendReq::SET_MEM_TABLE));
  m.set_payload_bytes(table_payload(2));
  m.fds.push_back(make_eventfd());
  m.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.front.send(m).ok());
  auto r = p.back.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(r.message().find("SET_MEM_TABLE"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("limit is 1"), std::string::npos) << r.message();
  expect_still_framed(p);
}

void fds_beyond_fd_rule() {
  Pair p = make_pair();
  Message call = Message::request_with(id(FrontendReq::SET_VRING_CALL), uint64_t{0});
  call.fds.push_back(make_eventfd());
  call.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.front.send(call).ok());
  auto r = p.back.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(r.message().find("SET_VRING_CALL"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("got 2"), std::string::npos) << r.message();

  // The no-fd flag says none rides along; one does anyway.
  Message kick = Message::request_with(id(FrontendReq::SET_VRING_KICK), kVringNoFdFlag | 1);
  kick.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.front.send(kick).ok());
  r = p.back.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(r.message().find("SET_VRING_KICK"), std::string::npos) << r.message();

  // SET_MEM_TABLE takes one fd per region it lists.
  Message table = Message::empty(id(FrontendReq::SET_MEM_TABLE));
  table.set_payload_bytes(table_payload(1));
  table.fds.push_back(make_eventfd());
  table.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.front.send(table).ok());
  r = p.back.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(r.message().find("SET_MEM_TABLE"), std::string::npos) << r.message();
  expect_still_framed(p);
}

void fds_on_message_that_carries_none() {
  Pair p = make_pair();
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd rd(pipefd[0]);
  {
    UniqueFd wr(pipefd[1]);
    const int fds[] = {wr.get()};
    ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_OWNER), 0), fds).ok());
  }
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Invalid);
  EXPECT_NE(m.message().find("SET_OWNER"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("closed"), std::string::npos) << m.message();
  // The received copy was the last write end: the pipe reads EOF only if it
  // was really closed (non-blocking, so a leak fails instead of hanging).
  ASSERT_EQ(fcntl(rd.get(), F_SETFL, O_NONBLOCK), 0);
  char c;
  EXPECT_EQ(::read(rd.get(), &c, 1), 0);
  expect_still_framed(p);
}

void fds_on_unknown_request() {
  Pair p = make_pair();
  UniqueFd e = make_eventfd();
  const int fds[] = {e.get()};
  ASSERT_TRUE(p.front.send_raw(raw(200, 4, {0, 0, 0, 0}), fds).ok());
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Invalid);
  EXPECT_NE(m.message().find("UNKNOWN(200)"), std::string::npos) << m.message();
  expect_still_framed(p);
}

void timeout_inside_message() {
  Pair p = make_pair();
  ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_FEATURES), 8, {1, 2})).ok());
  auto m = p.back.recv(50);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  EXPECT_NE(m.message().find("SET_FEATURES"), std::string::npos) << m.message();
  EXPECT_NE(m.message().find("2 of 8"), std::string::npos) << m.message();
}

TEST(Channel, RoundTripWithFd) {
  Pair p = make_pair();
  UniqueFd e = make_eventfd();
  Message m = Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{1}, true);
  m.fds.push_back(UniqueFd(fcntl(e.get(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(p.front.send(m).ok());
  auto r = p.back.recv(1000);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->hdr.request, id(FrontendReq::SET_VRING_KICK));
  EXPECT_EQ(r->hdr.flags, kVersion | kFlagNeedReply);
  EXPECT_EQ(r->payload, u64_payload(1));
  ASSERT_EQ(r->fds.size(), 1u);
  EXPECT_TRUE(same_file(r->fds[0].get(), e.get()));
  EXPECT_TRUE(fcntl(r->fds[0].get(), F_GETFD) & FD_CLOEXEC);
  // The sender keeps its own fds.
  EXPECT_TRUE(m.fds[0].valid());
}

TEST(Channel, RoundTripEmptyPayloadAndReply) {
  Pair p = make_pair();
  ASSERT_TRUE(p.front.send(Message::empty(id(FrontendReq::GET_FEATURES))).ok());
  auto req = p.back.recv(1000);
  ASSERT_TRUE(req.ok()) << req.message();
  EXPECT_TRUE(req->payload.empty());
  ASSERT_TRUE(p.back.send(Message::reply_to(*req, uint64_t{0x1234})).ok());
  auto rep = p.front.recv(1000);
  ASSERT_TRUE(rep.ok()) << rep.message();
  EXPECT_TRUE(rep->is_reply());
  EXPECT_EQ(rep->payload, u64_payload(0x1234));
}

TEST(Channel, ReplyFdsFollowTheReplyRule) {
  Pair p = make_pair();
  Message rep = Message::reply_to(Message::empty(id(FrontendReq::GET_INFLIGHT_FD)), InflightPayload{});
  rep.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.back.send(rep).ok());
  auto r = p.front.recv(1000);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->fds.size(), 1u);

  Message bad = Message::reply_to(Message::empty(id(FrontendReq::GET_FEATURES)), uint64_t{0});
  bad.fds.push_back(make_eventfd());
  ASSERT_TRUE(p.back.send(bad).ok());
  r = p.front.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(r.message().find("GET_FEATURES reply"), std::string::npos) << r.message();
}

TEST(Channel, BackendPlaneNamesBackendRequests) {
  Pair p = make_pair({}, Plane::Backend);
  UniqueFd e = make_eventfd();
  const int fds[] = {e.get()};
  ASSERT_TRUE(p.front.send_raw(raw(static_cast<uint32_t>(BackendReq::BACKEND_CONFIG_CHANGE_MSG), 0), fds).ok());
  auto r = p.back.recv(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("BACKEND_CONFIG_CHANGE_MSG"), std::string::npos) << r.message();
}

TEST(Channel, MissingFdsAreLeftToTheHandler) {
  // Too few fds is a semantic error the message handler reports; the channel
  // only has to act on a surplus, which it must close.
  Pair p = make_pair();
  ASSERT_TRUE(p.front.send(Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{0})).ok());
  auto r = p.back.recv(1000);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_TRUE(r->fds.empty());
  EXPECT_FALSE(check_fd_count(Plane::Frontend, *r).ok());
}

TEST(Channel, RejectsOversizedPayload) { oversized_payload(); }
TEST(Channel, RejectsTruncatedHeader) { truncated_header(); }
TEST(Channel, RejectsTruncatedHeaderAndClosesItsFds) { truncated_header_with_fds(); }
TEST(Channel, RejectsTruncatedPayload) { truncated_payload(); }
TEST(Channel, RejectsTooManyFds) { too_many_fds(); }
TEST(Channel, RejectsFdsOverConfiguredLimit) { fds_over_configured_limit(); }
TEST(Channel, RejectsFdsBeyondFdRule) { fds_beyond_fd_rule(); }
TEST(Channel, ClosesFdsOnMessageThatCarriesNone) { fds_on_message_that_carries_none(); }
TEST(Channel, ClosesFdsOnUnknownRequest) { fds_on_unknown_request(); }
TEST(Channel, TimeoutInsideMessageIsDesync) { timeout_inside_message(); }

TEST(Channel, NoFdLeakAcrossRejections) {
  // INTEROP.md item 9: surplus fds leaked until the process ran out.
  const size_t before = open_fd_count();
  for (int round = 0; round < 3; ++round) {
    oversized_payload();
    truncated_header();
    truncated_header_with_fds();
    truncated_payload();
    too_many_fds();
    fds_over_configured_limit();
    fds_beyond_fd_rule();
    fds_on_message_that_carries_none();
    fds_on_unknown_request();
    timeout_inside_message();
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST(Channel, ReportsClosedBeforeHeader) {
  Pair p = make_pair();
  p.front.close();
  auto m = p.back.recv(1000);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Closed);
}

TEST(Channel, Timeout) {
  Pair p = make_pair();
  const auto t0 = std::chrono::steady_clock::now();
  auto m = p.back.recv(50);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Timeout);
  EXPECT_GE(waited, std::chrono::milliseconds(45));
  EXPECT_LT(waited, std::chrono::seconds(5));
  // Nothing was consumed: the stream is still framed.
  expect_still_framed(p);
}

TEST(Channel, TimeoutCoversTheWholeMessage) {
  // A peer trickling one byte at a time must not stretch the deadline.
  Pair p = make_pair();
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const auto bytes = raw(id(FrontendReq::SET_FEATURES), 8, u64_payload(7));
    for (size_t i = 0; i < bytes.size() && !stop; ++i) {
      (void)p.front.send_raw(std::span(bytes).subspan(i, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto m = p.back.recv(200);
  const auto waited = std::chrono::steady_clock::now() - t0;
  stop = true;
  writer.join();
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().kind, ErrorKind::Desync);
  // Per-read deadlines would have let all 20 bytes through (about 2 s).
  EXPECT_LT(waited, std::chrono::milliseconds(1500));
}

TEST(Channel, HandlesShortWrites) {
  auto sp = socket_pair();
  ASSERT_TRUE(sp.ok());
  const int small = 4096;
  ASSERT_EQ(setsockopt(sp->first.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(setsockopt(sp->second.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  // Non-blocking, so sendmsg really returns short counts and EAGAIN.
  ASSERT_EQ(fcntl(sp->first.get(), F_SETFL, O_NONBLOCK), 0);
  Channel front(std::move(sp->first), Plane::Frontend);
  Channel back(std::move(sp->second), Plane::Frontend, ChannelLimits{.max_payload = 1u << 20});

  std::vector<uint8_t> body(1u << 20);
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<uint8_t>(i * 7 + i / 251);
  Message m = Message::empty(id(FrontendReq::ADD_MEM_REG));
  m.set_payload_bytes(body);
  UniqueFd e = make_eventfd();
  m.fds.push_back(UniqueFd(fcntl(e.get(), F_DUPFD_CLOEXEC, 0)));

  Result<Message> got = Err("not received");
  std::thread reader([&] { got = back.recv(10000); });
  auto sent = front.send(m);
  reader.join();
  ASSERT_TRUE(sent.ok()) << sent.message();
  ASSERT_TRUE(got.ok()) << got.message();
  EXPECT_EQ(got->hdr.size, body.size());
  EXPECT_TRUE(got->payload == body);
  ASSERT_EQ(got->fds.size(), 1u);
  EXPECT_TRUE(same_file(got->fds[0].get(), e.get()));
}

TEST(Channel, HandlesShortReads) {
  // The message arrives in pieces, the fd with the first one.
  Pair p = make_pair();
  UniqueFd e = make_eventfd();
  std::thread writer([&] {
    const auto bytes = raw(id(FrontendReq::SET_VRING_CALL), 8, u64_payload(3));
    const int fds[] = {e.get()};
    const size_t cuts[] = {0, 5, 12, 15, bytes.size()};
    for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
      auto piece = std::span(bytes).subspan(cuts[i], cuts[i + 1] - cuts[i]);
      EXPECT_TRUE(p.front.send_raw(piece, i == 0 ? std::span<const int>(fds) : std::span<const int>()).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  auto m = p.back.recv(5000);
  writer.join();
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->payload, u64_payload(3));
  ASSERT_EQ(m->fds.size(), 1u);
  EXPECT_TRUE(same_file(m->fds[0].get(), e.get()));
}

TEST(Channel, FdsSentWithThePayloadStayWithTheirMessage) {
  Pair p = make_pair();
  UniqueFd e = make_eventfd();
  const int fds[] = {e.get()};
  ASSERT_TRUE(p.front.send_raw(raw(id(FrontendReq::SET_VRING_CALL), 8)).ok());
  ASSERT_TRUE(p.front.send_raw(u64_payload(0), fds).ok());
  auto m = p.back.recv(1000);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->fds.size(), 1u);
  expect_still_framed(p);
}

void on_sigusr1(int) {}

TEST(Channel, HandlesEintr) {
  struct sigaction sa {}, old {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls really return EINTR
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);

  Pair p = make_pair();
  Result<Message> got = Err("not received");
  std::atomic<bool> done{false};
  std::thread reader([&] {
    got = p.back.recv(10000);
    done = true;
  });
  const pthread_t tid = reader.native_handle();
  for (int i = 0; i < 20 && !done; ++i) {
    pthread_kill(tid, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(done);
  ASSERT_TRUE(p.front.send(Message::request_with(id(FrontendReq::SET_FEATURES), uint64_t{5})).ok());
  reader.join();
  sigaction(SIGUSR1, &old, nullptr);
  ASSERT_TRUE(got.ok()) << got.message();
  EXPECT_EQ(got->payload, u64_payload(5));
}

TEST(Channel, PipelinedMessagesKeepTheirFds) {
  // INTEROP.md item 16: SET_PROTOCOL_FEATURES, SET_OWNER and SET_MEM_TABLE in
  // one burst; the table's fds must arrive with the table.
  Pair p = make_pair();
  UniqueFd r0 = make_eventfd(), r1 = make_eventfd();
  ASSERT_TRUE(p.front.send(Message::request_with(id(FrontendReq::SET_PROTOCOL_FEATURES), uint64_t{0x8001})).ok());
  ASSERT_TRUE(p.front.send(Message::empty(id(FrontendReq::SET_OWNER))).ok());
  Message table = Message::empty(id(FrontendReq::SET_MEM_TABLE), true);
  table.set_payload_bytes(table_payload(2));
  table.fds.push_back(UniqueFd(fcntl(r0.get(), F_DUPFD_CLOEXEC, 0)));
  table.fds.push_back(UniqueFd(fcntl(r1.get(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(p.front.send(table).ok());

  auto a = p.back.recv(1000);
  ASSERT_TRUE(a.ok()) << a.message();
  EXPECT_EQ(a->hdr.request, id(FrontendReq::SET_PROTOCOL_FEATURES));
  EXPECT_EQ(a->payload, u64_payload(0x8001));
  EXPECT_TRUE(a->fds.empty());
  auto b = p.back.recv(1000);
  ASSERT_TRUE(b.ok()) << b.message();
  EXPECT_EQ(b->hdr.request, id(FrontendReq::SET_OWNER));
  EXPECT_TRUE(b->fds.empty());
  auto c = p.back.recv(1000);
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(c->hdr.request, id(FrontendReq::SET_MEM_TABLE));
  EXPECT_EQ(c->payload, table_payload(2));
  ASSERT_EQ(c->fds.size(), 2u);
  EXPECT_TRUE(same_file(c->fds[0].get(), r0.get()));
  EXPECT_TRUE(same_file(c->fds[1].get(), r1.get()));
}

TEST(Channel, PipelinedFdsDoNotMerge) {
  Pair p = make_pair();
  UniqueFd call = make_eventfd(), kick = make_eventfd();
  Message m1 = Message::request_with(id(FrontendReq::SET_VRING_CALL), uint64_t{0});
  m1.fds.push_back(UniqueFd(fcntl(call.get(), F_DUPFD_CLOEXEC, 0)));
  Message m2 = Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{0});
  m2.fds.push_back(UniqueFd(fcntl(kick.get(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(p.front.send(m1).ok());
  ASSERT_TRUE(p.front.send(m2).ok());
  auto a = p.back.recv(1000);
  auto b = p.back.recv(1000);
  ASSERT_TRUE(a.ok()) << a.message();
  ASSERT_TRUE(b.ok()) << b.message();
  ASSERT_EQ(a->fds.size(), 1u);
  ASSERT_EQ(b->fds.size(), 1u);
  EXPECT_TRUE(same_file(a->fds[0].get(), call.get()));
  EXPECT_TRUE(same_file(b->fds[0].get(), kick.get()));
}

TEST(Channel, SendRejectsSizeMismatch) {
  Pair p = make_pair();
  Message m = Message::request_with(id(FrontendReq::SET_FEATURES), uint64_t{1});
  m.hdr.size = 4;
  auto r = p.front.send(m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("SET_FEATURES"), std::string::npos) << r.message();
  EXPECT_EQ(p.back.recv(20).error().kind, ErrorKind::Timeout);  // nothing went out
}

TEST(Channel, SendToClosedPeerIsAnErrorNotSigpipe) {
  Pair p = make_pair();
  p.back.close();
  auto r = p.front.send(Message::empty(id(FrontendReq::SET_OWNER)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Closed);
  EXPECT_NE(r.message().find("SET_OWNER"), std::string::npos) << r.message();
}

class ChannelUnixPath : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vhu-chan-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/sock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(ChannelUnixPath, ListenConnectAccept) {
  auto l = listen_unix(path_);
  ASSERT_TRUE(l.ok()) << l.message();
  auto c = connect_unix(path_);
  ASSERT_TRUE(c.ok()) << c.message();
  auto a = accept_unix(l->get(), 1000);
  ASSERT_TRUE(a.ok()) << a.message();
  EXPECT_TRUE(fcntl(a->get(), F_GETFD) & FD_CLOEXEC);
  Channel front(std::move(*c), Plane::Frontend), back(std::move(*a), Plane::Frontend);
  ASSERT_TRUE(front.send(Message::empty(id(FrontendReq::GET_QUEUE_NUM))).ok());
  auto m = back.recv(1000);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->hdr.request, id(FrontendReq::GET_QUEUE_NUM));
}

TEST_F(ChannelUnixPath, ListenReplacesStaleSocket) {
  { auto first = listen_unix(path_); ASSERT_TRUE(first.ok()) << first.message(); }
  ASSERT_TRUE(std::filesystem::exists(path_));  // left behind, as after a crash
  auto second = listen_unix(path_);
  ASSERT_TRUE(second.ok()) << second.message();
  EXPECT_TRUE(connect_unix(path_).ok());
}

TEST_F(ChannelUnixPath, ListenRefusesToRemoveANonSocket) {
  { FILE* f = fopen(path_.c_str(), "w"); ASSERT_NE(f, nullptr); fclose(f); }
  auto l = listen_unix(path_);
  ASSERT_FALSE(l.ok());
  EXPECT_TRUE(std::filesystem::exists(path_));
}

TEST_F(ChannelUnixPath, ConnectToMissingPathFails) {
  auto c = connect_unix(path_);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.message().find(path_), std::string::npos) << c.message();
}

TEST_F(ChannelUnixPath, RejectsOverlongPath) {
  auto l = listen_unix("/tmp/" + std::string(200, 'x'));
  ASSERT_FALSE(l.ok());
}

TEST_F(ChannelUnixPath, AcceptTimesOut) {
  auto l = listen_unix(path_);
  ASSERT_TRUE(l.ok()) << l.message();
  auto a = accept_unix(l->get(), 50);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().kind, ErrorKind::Timeout);
}

}  // namespace
}  // namespace vhu
