// Pure logic: credit arithmetic, the read-ahead byte ring, the device-state
// blob, the host handshake line, the command-line forms.
#include <gtest/gtest.h>

#include <cstring>
#include <deque>

#include "byte_ring.h"
#include "cli.h"
#include "credit.h"
#include "device_state.h"
#include "handshake.h"

namespace vsockref {
namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Credit, PeerFreeFollowsTheSpecFormula) {
  PeerCredit c;
  c.update(100000, 0);
  EXPECT_EQ(c.available(), 100000u);
  c.sent(60000);
  EXPECT_EQ(c.available(), 40000u);
  c.update(100000, 50000);
  EXPECT_EQ(c.available(), 90000u);
}

TEST(Credit, CountersWrapModulo2To32) {
  PeerCredit c;
  c.tx_cnt = 0xfffffff0u;
  c.update(0x10000, 0xffffffe0u);
  EXPECT_EQ(c.available(), 0xfff0u);
  c.sent(32);  // wraps
  EXPECT_EQ(c.tx_cnt, 0x10u);
  EXPECT_EQ(c.available(), 0xffd0u);
  c.update(0x10000, 0x10u);  // the packet's end, past the wrap
  EXPECT_TRUE(c.ends.empty());
}

// Linux (6.12.92 and later) resets a connection that queues more packets than
// buf_alloc / SKB_TRUESIZE(0): a peer holding its share of packets has no
// credit, however few bytes they are, until fwd_cnt passes the oldest.
TEST(Credit, PacketsArePartOfTheCredit) {
  PeerCredit c;
  c.update(8 * PeerCredit::kBytesPerPacket, 0);
  ASSERT_EQ(c.max_packets(), 8u);
  for (int i = 0; i < 7; ++i) c.sent(100);
  EXPECT_EQ(c.packets_left(), 1u);
  EXPECT_EQ(c.available(), 8 * PeerCredit::kBytesPerPacket - 700);
  c.sent(100);
  EXPECT_EQ(c.available(), 0u) << "eight 100-byte packets held: no credit, 7,392 bytes unused";
  c.update(c.buf_alloc, 150);  // the first packet consumed, half the second
  EXPECT_EQ(c.packets_left(), 1u);
  EXPECT_EQ(c.available(), 8 * PeerCredit::kBytesPerPacket - 650);
  c.update(c.buf_alloc, 800);
  EXPECT_EQ(c.packets_left(), 8u);
  // A tiny or a huge buffer: at least one packet, at most kMaxPackets.
  c.update(100, 800);
  EXPECT_EQ(c.max_packets(), 1u);
  EXPECT_EQ(c.available(), 100u);
  c.update(0xffffffffu, 800);
  EXPECT_EQ(c.max_packets(), PeerCredit::kMaxPackets);
}

TEST(Credit, ABogusPeerNeverYieldsHugeCredit) {
  PeerCredit c;
  c.sent(100);
  c.update(50, 0);  // shrank below what is in flight
  EXPECT_EQ(c.available(), 0u);
  c.update(50, 200);  // fwd_cnt ahead of what we sent
  EXPECT_EQ(c.available(), 0u);
}

TEST(Credit, LocalBufferAcceptsOnlyWithinCredit) {
  LocalCredit l;
  l.buf_alloc = 100;
  EXPECT_TRUE(l.can_accept(100));
  EXPECT_FALSE(l.can_accept(101));
  l.rx_cnt = 60;
  EXPECT_TRUE(l.can_accept(40));
  EXPECT_FALSE(l.can_accept(41));
  l.fwd_cnt = 60;
  EXPECT_TRUE(l.can_accept(100));
}

TEST(Credit, UpdateDueOnceTheGuestBelievesAQuarterInUse) {
  LocalCredit l;
  l.buf_alloc = 100;
  l.rx_cnt = 25;
  l.fwd_cnt = 25;
  EXPECT_FALSE(l.update_due());  // the guest still believes 75 are free
  l.rx_cnt = 26;
  l.fwd_cnt = 26;
  EXPECT_TRUE(l.update_due());
  l.reported_fwd = 26;
  EXPECT_FALSE(l.update_due());
  l.rx_cnt = 90;  // received but not forwarded: nothing new to tell
  EXPECT_FALSE(l.update_due());
}

DeviceState sample() {
  DeviceState s;
  s.guest_cid = 42;
  s.features = 0x170000002;
  s.protocol_features = 0x90208;
  s.config = {42, 0, 0, 0, 0, 0, 0, 0};
  s.transport_reset_pending = true;
  return s;
}

// Writes and reads of every size through the two-piece views keep the bytes
// in order, against a deque that sees the same operations.
TEST(ByteRing, KeepsOrderThroughEveryWrapAround) {
  ByteRing ring(100);
  std::deque<uint8_t> model;
  uint8_t next = 0;
  uint32_t rnd = 12345;
  auto roll = [&](uint32_t n) {
    rnd = rnd * 1103515245u + 12345u;
    return (rnd >> 16) % n;
  };
  int two_piece_writes = 0, two_piece_reads = 0;
  for (int step = 0; step < 20000; ++step) {
    iovec v[2];
    if (roll(2)) {
      const size_t want = roll(101);
      const int k = ring.free_iov(want, v);
      size_t n = 0;
      for (int i = 0; i < k; ++i) {
        auto* p = static_cast<uint8_t*>(v[i].iov_base);
        for (size_t j = 0; j < v[i].iov_len; ++j) p[j] = next++;
        n += v[i].iov_len;
      }
      two_piece_writes += k == 2;
      ASSERT_EQ(n, std::min(want, ring.space()));
      const size_t keep = roll(static_cast<uint32_t>(n) + 1);  // a short read commits less
      next = static_cast<uint8_t>(next - (n - keep));
      for (size_t j = 0; j < keep; ++j) model.push_back(static_cast<uint8_t>(next - keep + j));
      ring.commit(keep);
    } else {
      const size_t want = roll(101);
      const int k = ring.data_iov(want, v);
      size_t n = 0;
      for (int i = 0; i < k; ++i) {
        const auto* p = static_cast<const uint8_t*>(v[i].iov_base);
        for (size_t j = 0; j < v[i].iov_len; ++j) {
          ASSERT_EQ(p[j], model[n]) << "step " << step;
          ++n;
        }
      }
      two_piece_reads += k == 2;
      ASSERT_EQ(n, std::min(want, model.size()));
      ring.consume(n);
      model.erase(model.begin(), model.begin() + static_cast<ptrdiff_t>(n));
    }
    ASSERT_EQ(ring.size(), model.size());
    ASSERT_LE(ring.size(), ring.capacity());
  }
  EXPECT_GT(two_piece_writes, 0);
  EXPECT_GT(two_piece_reads, 0);
}

TEST(ByteRing, AllocatesOnFirstWriteAndNeverGrows) {
  ByteRing ring(8);
  EXPECT_FALSE(ring.allocated());
  iovec v[2];
  EXPECT_EQ(ring.data_iov(8, v), 0);
  EXPECT_FALSE(ring.allocated());
  ASSERT_EQ(ring.free_iov(100, v), 1);
  EXPECT_TRUE(ring.allocated());
  EXPECT_EQ(v[0].iov_len, 8u);
  std::memset(v[0].iov_base, 'x', 8);
  ring.commit(100);  // more than it has room for: clamped
  EXPECT_EQ(ring.size(), 8u);
  EXPECT_EQ(ring.free_iov(1, v), 0);
  // Emptied, the next write starts at the front again: one piece, not two.
  ring.consume(5);
  ring.consume(3);
  ASSERT_EQ(ring.free_iov(8, v), 1);
  EXPECT_EQ(v[0].iov_len, 8u);
}

TEST(DeviceStateBlob, RoundTrips) {
  const auto blob = serialize_device_state(sample());
  auto back = parse_device_state(blob);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(*back, sample());
}

TEST(DeviceStateBlob, EveryTruncationIsRejected) {
  const auto blob = serialize_device_state(sample());
  for (size_t n = 0; n < blob.size(); ++n)
    EXPECT_FALSE(parse_device_state(std::span<const uint8_t>(blob.data(), n)).ok()) << n;
}

TEST(DeviceStateBlob, EveryFlippedBitIsRejected) {
  const auto blob = serialize_device_state(sample());
  for (size_t i = 0; i < blob.size() * 8; ++i) {
    auto b = blob;
    b[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
    EXPECT_FALSE(parse_device_state(b).ok()) << "bit " << i;
  }
}

TEST(DeviceStateBlob, TrailingBytesAndOtherVersionsAreRejected) {
  auto blob = serialize_device_state(sample());
  auto longer = blob;
  longer.push_back(0);
  EXPECT_FALSE(parse_device_state(longer).ok());
  std::vector<uint8_t> huge(kDeviceStateMaxBytes + 1, 0);
  EXPECT_FALSE(parse_device_state(huge).ok());
}

TEST(DeviceStateBlob, ReservedCidIsRejectedEvenWithAGoodChecksum) {
  DeviceState s = sample();
  s.guest_cid = 2;
  EXPECT_FALSE(parse_device_state(serialize_device_state(s)).ok());
}

TEST(Handshake, ParsesAConnectLine) {
  auto r = parse_connect_line(bytes("CONNECT 1234\n"));
  ASSERT_EQ(r.status, ConnectLine::Done);
  EXPECT_EQ(r.port, 1234u);
  EXPECT_EQ(r.line_bytes, 13u);
  r = parse_connect_line(bytes("CONNECT 4294967295\r\nextra"));
  ASSERT_EQ(r.status, ConnectLine::Done);
  EXPECT_EQ(r.port, 4294967295u);
  EXPECT_EQ(r.line_bytes, 20u);
}

TEST(Handshake, WaitsForAPartialLine) {
  EXPECT_EQ(parse_connect_line(bytes("")).status, ConnectLine::NeedMore);
  EXPECT_EQ(parse_connect_line(bytes("CONN")).status, ConnectLine::NeedMore);
  EXPECT_EQ(parse_connect_line(bytes("CONNECT 12")).status, ConnectLine::NeedMore);
}

TEST(Handshake, RejectsGarbageEarly) {
  for (const char* bad : {"GET / HTTP/1.1\n", "connect 5\n", "CONNECT\n", "CONNECT \n", "CONNECT -1\n",
                          "CONNECT 12a\n", "CONNECT 4294967296\n", "CONNECT 1 2\n", "X"})
    EXPECT_EQ(parse_connect_line(bytes(bad)).status, ConnectLine::Invalid) << bad;
  EXPECT_EQ(parse_connect_line(bytes("CONNECT " + std::string(60, '1'))).status, ConnectLine::Invalid);
}

TEST(Handshake, OkLineNamesThePort) { EXPECT_EQ(format_ok_line(1073741824), "OK 1073741824\n"); }

TEST(Cli, ParsesTheVhostDeviceVsockVmForm) {
  VmConfig def;
  auto vm = parse_vm_spec("guest-cid=4,socket=/tmp/s4,uds-path=/tmp/u4,groups=a+b,tx-buffer-size=1024", def);
  ASSERT_TRUE(vm.ok()) << vm.message();
  EXPECT_EQ(vm->guest_cid, 4u);
  EXPECT_EQ(vm->socket, "/tmp/s4");
  EXPECT_EQ(vm->uds_path, "/tmp/u4");
  EXPECT_EQ(vm->groups, (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(vm->tx_buffer_size, 1024u);
}

TEST(Cli, RejectsBadVmForms) {
  VmConfig def;
  for (const char* bad : {"socket=/s", "guest-cid=4", "guest-cid=x,socket=/s", "guest-cid=4,socket=/s,bogus=1",
                          "guest-cid=4,socket=/s,groups=a++b", "guest-cid=99999999999999999999,socket=/s"})
    EXPECT_FALSE(parse_vm_spec(bad, def).ok()) << bad;
}

TEST(Cli, ValidatesCidsAndPaths) {
  VmConfig a, b;
  a.socket = "/s1";
  b.socket = "/s2";
  a.guest_cid = 3;
  b.guest_cid = 3;
  EXPECT_FALSE(validate_vms({a, b}).ok());
  b.guest_cid = 4;
  EXPECT_TRUE(validate_vms({a, b}).ok());
  b.guest_cid = 2;
  EXPECT_FALSE(validate_vms({a, b}).ok());
  b.guest_cid = 0x100000000ull;
  EXPECT_FALSE(validate_vms({a, b}).ok());
  EXPECT_FALSE(validate_vms({}).ok());
}

CommandLine parse(std::vector<const char*> args) {
  args.insert(args.begin(), "vhost-user-vsock-ref");
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

TEST(Cli, CommandLineGivesSettingsOrWhatToPrint) {
  auto one = parse({"--socket", "/s", "--guest-cid", "5", "--uds-path", "/u", "--spec", "newest", "--log-level",
                    "debug"});
  ASSERT_TRUE(one.settings) << one.err;
  ASSERT_EQ(one.settings->vms.size(), 1u);
  EXPECT_EQ(one.settings->vms[0].guest_cid, 5u);
  EXPECT_EQ(one.settings->vms[0].spec, vhu::SpecText::Newest);
  EXPECT_EQ(one.settings->log_level, LogLevel::Debug);

  auto two = parse({"--vm", "guest-cid=3,socket=/a", "--vm", "guest-cid=4,socket=/b,groups=g"});
  ASSERT_TRUE(two.settings) << two.err;
  EXPECT_EQ(two.settings->vms.size(), 2u);

  auto help = parse({"--help"});
  EXPECT_FALSE(help.settings);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--vm"), std::string::npos);

  // Each refusal: no settings, a non-zero exit code, and a message naming the problem.
  for (auto bad : std::vector<std::vector<const char*>>{{"--bogus"},
                                                         {"--socket", "/s", "--vm", "guest-cid=3,socket=/a"},
                                                         {"--socket", "/s", "--log-level", "loud"},
                                                         {"--socket", "/s", "--groups", "a++b"},
                                                         {"--socket", "/s", "--spec", "draft"},
                                                         {"--guest-cid", "3"}}) {
    auto r = parse(bad);
    EXPECT_FALSE(r.settings) << bad[0];
    EXPECT_NE(r.exit_code, 0) << bad[0];
    EXPECT_FALSE(r.err.empty()) << bad[0];
  }
}

// vhost-user.rst's back-end program conventions name the socket options
// --socket-path=PATH and --fd=FDNUM, "incompatible" with each other.
TEST(Cli, SocketPathAndFdAreTheConventionsNames) {
  auto path = parse({"--socket-path=/s", "--guest-cid", "5"});
  ASSERT_TRUE(path.settings) << path.err;
  EXPECT_EQ(path.settings->vms.at(0).socket, "/s");
  EXPECT_EQ(path.settings->vms.at(0).socket_fd, -1);

  auto fd = parse({"--fd=7", "--guest-cid", "5", "--uds-path", "/u"});
  ASSERT_TRUE(fd.settings) << fd.err;
  EXPECT_EQ(fd.settings->vms.at(0).socket_fd, 7);
  EXPECT_TRUE(fd.settings->vms.at(0).socket.empty());
  EXPECT_EQ(fd.settings->vms.at(0).uds_path, "/u");

  for (auto [args, says] : std::vector<std::pair<std::vector<const char*>, std::string>>{
           {{"--fd", "7", "--socket-path", "/s"}, "incompatible"},
           {{"--fd", "7", "--socket", "/s"}, "incompatible"},
           {{"--fd", "7", "--client"}, "--client"},
           {{"--fd", "7", "--vm", "guest-cid=3,socket=/a"}, "--vm"},
           {{"--fd", "-2"}, "not a file descriptor"},
           {{"--fd", "seven"}, "--fd"}}) {
    auto r = parse(args);
    EXPECT_FALSE(r.settings) << args[1];
    EXPECT_NE(r.exit_code, 0) << args[1];
    EXPECT_NE(r.err.find(says), std::string::npos) << args[1] << ": " << r.err;
  }
}

// vhost-user.rst's back-end program conventions: print, exit successfully,
// ignore every other option, even one that would not parse.
TEST(Cli, PrintCapabilitiesIgnoresTheRest) {
  for (auto args : std::vector<std::vector<const char*>>{{"--print-capabilities"},
                                                          {"--socket", "/s", "--guest-cid", "5", "--print-capabilities"},
                                                          {"--bogus", "--print-capabilities", "--guest-cid", "2"},
                                                          {"--help", "--print-capabilities"},
                                                          // a value of --vm for CLI11 (found by fuzzing)
                                                          {"--vm", "--print-capabilities"},
                                                          {"--socket", "--print-capabilities"}}) {
    auto r = parse(args);
    EXPECT_FALSE(r.settings) << args[0];
    EXPECT_EQ(r.exit_code, 0) << args[0];
    EXPECT_EQ(r.out, capabilities_json()) << args[0];
    EXPECT_TRUE(r.err.empty()) << args[0] << ": " << r.err;
  }
  EXPECT_EQ(capabilities_json(), "{\"type\": \"vsock\"}\n");
}

}  // namespace
}  // namespace vsockref
