// The back-end on a socketpair, driven as QEMU and a Linux guest drive it
// (libvhu Channel + DriverQueue), with real host programs on Unix sockets.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "credit.h"
#include "device_state.h"
#include "test_guest.h"
#include "vsock_device.h"
#include "vhu/features.h"

namespace vsockref::test {
namespace {

using namespace std::chrono_literals;
using vhu::FrontendReq;
using vhu::vsock::Op;
namespace pf = vhu::protocol_feature;
constexpr uint64_t kQemuPf = vhu::bit(pf::REPLY_ACK) | vhu::bit(pf::CONFIG) | vhu::bit(pf::STATUS);

uint16_t op(Op o) { return static_cast<uint16_t>(o); }
std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Drives a guest-initiated connection to host port `port`; returns the host fd.
vhu::UniqueFd connect_guest_to_host(Harness& h, uint32_t guest_port, uint32_t port, int listen_fd) {
  Guest& g = *h.guest;
  g.send_pkt(g.hdr(2, guest_port, port, Op::REQUEST));
  auto p = g.recv_pkt();
  EXPECT_TRUE(p.has_value());
  if (!p) return {};
  EXPECT_EQ(p->hdr.op, op(Op::RESPONSE));
  EXPECT_EQ(p->hdr.src_cid, 2u);
  EXPECT_EQ(p->hdr.dst_port, guest_port);
  return accept_one(listen_fd);
}

// QEMU's start with `rx` buffers posted (Guest::post_rx), then a stream the
// guest opens from port 5000 to the host program listening on 1234
// (`listen_fd`); returns the host's end.
vhu::UniqueFd start_and_connect(Harness& h, int listen_fd, int rx, uint32_t rx_size = Guest::kRxBuf,
                                bool split = false) {
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  g.post_rx(rx, rx_size, split);
  g.start();
  return connect_guest_to_host(h, 5000, 1234, listen_fd);
}

// Guest sends `data` to the host within the credit the device advertises.
void guest_send_stream(Harness& h, uint32_t gport, uint32_t hport, const std::vector<uint8_t>& data, int host_fd,
                       std::vector<uint8_t>& host_got, uint32_t buf_alloc, uint32_t fwd) {
  Guest& g = *h.guest;
  uint32_t tx_cnt = 0;
  size_t off = 0;
  while (off < data.size() || host_got.size() < data.size()) {
    const uint32_t credit = buf_alloc - (tx_cnt - fwd);
    if (off < data.size() && credit > 0) {
      const size_t n = std::min<size_t>({data.size() - off, credit, 16384});
      g.send_pkt(g.hdr(2, gport, hport, Op::RW, static_cast<uint32_t>(n)),
                 std::vector<uint8_t>(data.begin() + static_cast<ptrdiff_t>(off),
                                      data.begin() + static_cast<ptrdiff_t>(off + n)));
      off += n;
      tx_cnt += static_cast<uint32_t>(n);
    }
    uint8_t buf[65536];
    const size_t r = read_some(host_fd, buf, sizeof buf, 5ms);
    host_got.insert(host_got.end(), buf, buf + r);
    while (auto p = g.recv_pkt(1ms)) {
      ASSERT_NE(p->hdr.op, op(Op::RST));
      buf_alloc = p->hdr.buf_alloc;
      fwd = p->hdr.fwd_cnt;
    }
    if (off == data.size() && r == 0 && host_got.size() < data.size()) {
      // keep draining
      const size_t more = read_some(host_fd, buf, sizeof buf, 200ms);
      ASSERT_GT(more + host_got.size(), host_got.size()) << "stream stalled at " << host_got.size();
      host_got.insert(host_got.end(), buf, buf + more);
    }
  }
}

// Host writes `data`; the guest receives it, returning credit as it goes.
std::vector<uint8_t> host_send_stream(Harness& h, uint32_t gport, uint32_t hport, const std::vector<uint8_t>& data,
                                      int host_fd) {
  Guest& g = *h.guest;
  std::vector<uint8_t> got;
  size_t off = 0;
  uint32_t since_update = 0;
  while (got.size() < data.size()) {
    if (off < data.size()) {
      const ssize_t w = ::send(host_fd, data.data() + off, std::min<size_t>(data.size() - off, 65536),
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) off += static_cast<size_t>(w);
    }
    auto p = g.recv_pkt(50ms);
    if (!p) {
      EXPECT_LT(off, data.size() + 1);
      if (off == data.size()) {
        p = g.recv_pkt(2000ms);
        if (!p) {
          ADD_FAILURE() << "host-to-guest stream stalled at " << got.size();
          return got;
        }
      } else {
        continue;
      }
    }
    if (p->hdr.op == op(Op::RW)) {
      EXPECT_EQ(p->hdr.dst_port, gport);
      EXPECT_EQ(p->hdr.src_port, hport);
      EXPECT_LE(p->hdr.len, g.buf_alloc);
      got.insert(got.end(), p->payload.begin(), p->payload.end());
      since_update += p->hdr.len;
      if (since_update >= 64 * 1024) {
        g.send_pkt(g.hdr(2, gport, hport, Op::CREDIT_UPDATE));
        since_update = 0;
      }
    } else if (p->hdr.op == op(Op::CREDIT_REQUEST)) {
      g.send_pkt(g.hdr(2, gport, hport, Op::CREDIT_UPDATE));
    } else {
      EXPECT_EQ(p->hdr.op, op(Op::CREDIT_UPDATE)) << vhu::vsock::describe(p->hdr);
    }
  }
  return got;
}

// The next packet that is not credit bookkeeping. A device may send a
// CREDIT_REQUEST whenever the guest's window is full, even after the host's
// last byte (it cannot tell the socket is empty without another read), and a
// CREDIT_UPDATE at any time; the guest answers the request as Linux does.
std::optional<Packet> recv_past_credit(Guest& g, uint32_t gport, uint32_t hport) {
  for (;;) {
    auto p = g.recv_pkt();
    if (!p || p->hdr.len != 0) return p;
    if (p->hdr.op == op(Op::CREDIT_REQUEST)) {
      g.send_pkt(g.hdr(2, gport, hport, Op::CREDIT_UPDATE));
    } else if (p->hdr.op != op(Op::CREDIT_UPDATE)) {
      return p;
    }
  }
}

TEST(Integration, QemuStartupKeepsTheRequestQueuedBeforeEnable) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  // As in the traces: rx buffers and a pending REQUEST are in the rings
  // before SET_VRING_KICK, and the enables come after the kicks.
  g.post_rx(64);
  g.send_pkt(g.hdr(2, 5000, 1234, Op::REQUEST));
  g.start();
  auto p = g.recv_pkt();
  ASSERT_TRUE(p.has_value()) << "the REQUEST queued before SET_VRING_ENABLE was lost";
  EXPECT_EQ(p->hdr.op, op(Op::RESPONSE));
  EXPECT_EQ(p->hdr.dst_cid, 3u);
  EXPECT_TRUE(accept_one(l.get()).valid());
}

TEST(Integration, GuestToHostAndHostToGuestStreamsAreByteExact) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 64, Guest::kRxBuf, /*split=*/true);
  ASSERT_TRUE(host.valid());
  const auto up = random_bytes(1 << 20, 1);
  std::vector<uint8_t> host_got;
  guest_send_stream(h, 5000, 1234, up, host.get(), host_got, h.cfg.tx_buffer_size, 0);
  EXPECT_TRUE(host_got == up);
  const auto down = random_bytes(1 << 20, 2);
  auto guest_got = host_send_stream(h, 5000, 1234, down, host.get());
  EXPECT_TRUE(guest_got == down);
  // Host half-closes: the guest hears SHUTDOWN(SEND) only.
  ::shutdown(host.get(), SHUT_WR);
  auto p = recv_past_credit(g, 5000, 1234);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN));
  EXPECT_EQ(p->hdr.flags, vhu::vsock::kShutdownSend);
  // The other direction still works.
  const std::vector<uint8_t> tail = {1, 2, 3};
  g.send_pkt(g.hdr(2, 5000, 1234, Op::RW, 3), tail);
  uint8_t buf[8];
  EXPECT_EQ(read_some(host.get(), buf, sizeof buf, 2000ms), 3u);
  // The guest closes: SHUTDOWN both, answered by RST; the host sees EOF.
  auto sd = g.hdr(2, 5000, 1234, Op::SHUTDOWN);
  sd.flags = 3;
  g.send_pkt(sd);
  p = recv_past_credit(g, 5000, 1234);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RST));
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 0);
}

// A guest may post rx buffers with room for a header only. Reading host data
// into no bytes returns 0, which must not pass for the host's end of stream:
// the guest gets credit in them, then the data once a real buffer comes.
TEST(Integration, HeaderOnlyRxBuffersAreNoEndOfStream) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  // The RESPONSE takes one; each comes back as it was.
  auto host = start_and_connect(h, l.get(), 2, vhu::vsock::kHdrSize);
  ASSERT_TRUE(host.valid());
  const std::string hello = "hello";
  ASSERT_TRUE(write_all(host.get(), reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
  int credit_updates = 0;
  std::optional<Packet> p;
  for (int i = 0; i < 16; ++i) {
    if (i == 2) g.post_rx(1);
    p = g.recv_pkt();
    ASSERT_TRUE(p);
    ASSERT_NE(p->hdr.op, op(Op::SHUTDOWN)) << "the host did not close; packet " << i;
    if (p->hdr.op != op(Op::CREDIT_UPDATE)) break;
    EXPECT_EQ(p->hdr.len, 0u);
    ++credit_updates;
  }
  EXPECT_GE(credit_updates, 2);
  EXPECT_EQ(p->hdr.op, op(Op::RW));
  EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), hello);
}

// A buffer too small for a header, met while one read fills several rx
// buffers, comes back empty (used length 0), never with a used length beyond
// its size; the data goes on in the buffers after it.
TEST(Integration, RxBuffersTooSmallForAHeaderComeBackEmpty) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 1);  // one rx buffer, for the RESPONSE
  ASSERT_TRUE(host.valid());
  // Written before the buffers come, so one read finds it all.
  const auto data = random_bytes(32768, 6);
  ASSERT_TRUE(write_all(host.get(), data.data(), data.size()));
  std::this_thread::sleep_for(50ms);
  g.post_rx(1);
  g.post_rx(1, 20);
  g.post_rx(1, 0);
  g.post_rx(12);
  std::vector<uint8_t> got;
  while (got.size() < data.size()) {
    auto p = g.recv_pkt();  // checks every used length against its buffer
    ASSERT_TRUE(p) << "stalled at " << got.size();
    got.insert(got.end(), p->payload.begin(), p->payload.end());
  }
  EXPECT_TRUE(got == data);
  EXPECT_EQ(g.rx_returned_empty, 2);
}

TEST(Integration, HostConnectGetsOkWithTheHostPort) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  g.post_rx(32);
  g.start();
  auto host = host_connect(h.cfg.uds_path, 5000);
  // Bytes right after the line belong to the stream.
  const std::string early = "early";
  ASSERT_TRUE(write_all(host.get(), reinterpret_cast<const uint8_t*>(early.data()), early.size()));
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::REQUEST));
  EXPECT_EQ(p->hdr.src_cid, 2u);
  EXPECT_EQ(p->hdr.dst_port, 5000u);
  const uint32_t hport = p->hdr.src_port;
  g.send_pkt(g.hdr(2, 5000, hport, Op::RESPONSE));
  EXPECT_EQ(read_line(host.get()), "OK " + std::to_string(hport) + "\n");
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RW));
  EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), "early");
  // Host closes: SHUTDOWN with both flags.
  host.reset();
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN));
  EXPECT_EQ(p->hdr.flags, 3u);
}

TEST(Integration, RefusedAndUnknownGetRstButRstNever) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  g.post_rx(32);
  g.start();
  g.send_pkt(g.hdr(2, 5000, 4321, Op::REQUEST));  // nobody listens
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RST));
  g.send_pkt(g.hdr(2, 5001, 4321, Op::RW, 0));  // unknown connection
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RST));
  g.send_pkt(g.hdr(2, 5002, 4321, Op::RST));  // an RST is never answered
  g.send_pkt(g.hdr(77, 5003, 1, Op::REQUEST));  // no such CID
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RST));
  EXPECT_EQ(p->hdr.dst_port, 5003u);
  auto spoof = g.hdr(2, 5004, 1, Op::REQUEST);
  spoof.src_cid = 9;  // dropped without a word
  g.send_pkt(spoof);
  EXPECT_FALSE(g.recv_pkt(200ms));
}

TEST(Integration, StopContQueuesHostDataAndDeliversItOnce) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 64);
  ASSERT_TRUE(host.valid());
  const auto bases = g.stop();
  EXPECT_EQ(bases[1], g.txq.avail_idx()) << "GET_VRING_BASE must return the next avail index";
  bool suspended = false;
  h.on_loop([&] { suspended = h.vm->backend().suspended(); });
  EXPECT_TRUE(suspended);
  // While suspended: host data waits, nothing is written to guest memory,
  // and a new call fd is not signalled.
  const uint16_t used_before = g.rxq.device_used_idx();
  auto fresh_call = vhu::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  auto call = vhu::Message::request_with(static_cast<uint32_t>(FrontendReq::SET_VRING_CALL), uint64_t{0});
  call.fds.push_back(vhu::UniqueFd(::dup(fresh_call.get())));
  g.send(std::move(call));
  const auto data = random_bytes(20000, 3);
  ASSERT_TRUE(write_all(host.get(), data.data(), data.size()));
  g.post_rx(8);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(g.rxq.device_used_idx(), used_before);
  uint64_t v = 0;
  EXPECT_LT(::read(fresh_call.get(), &v, sizeof v), 0) << "a suspended device signalled a call fd";
  // cont: same addresses, the bases GET_VRING_BASE returned.
  g.start(false, bases[0], bases[1]);
  std::vector<uint8_t> got;
  while (got.size() < data.size()) {
    auto p = g.recv_pkt();
    ASSERT_TRUE(p) << "after cont got " << got.size();
    if (p->hdr.op == op(Op::RW)) got.insert(got.end(), p->payload.begin(), p->payload.end());
  }
  EXPECT_TRUE(got == data);
  EXPECT_FALSE(g.recv_pkt(200ms)) << "data delivered twice";
  // The connection survived: guest to host still works.
  g.send_pkt(g.hdr(2, 5000, 1234, Op::RW, 2), {7, 8});
  uint8_t buf[4];
  EXPECT_EQ(read_some(host.get(), buf, sizeof buf, 2000ms), 2u);
}

// A flow whose guest has no credit left reads the host's bytes ahead, into at
// most kReadAhead (256 KiB) of the back-end's memory; they survive a stop and
// cont, and reach the guest in order, before the host's end of stream, once
// credit returns.
TEST(Integration, HostBytesBeyondCreditAreReadAheadBoundedAndInOrder) {
  constexpr size_t kReadAhead = VsockDevice::kReadAhead;
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 64);
  ASSERT_TRUE(host.valid());
  // The host socket holds next to nothing itself, so what the host manages to
  // write is what the device took: the guest's credit and the read-ahead.
  const int small = 4096;
  ASSERT_EQ(::setsockopt(host.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  const auto data = random_bytes(2u << 20, 4);
  size_t off = 0;
  std::vector<uint8_t> got;
  auto write_some = [&] {
    if (off == data.size()) return false;
    const ssize_t w = ::send(host.get(), data.data() + off, std::min<size_t>(data.size() - off, 65536),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w <= 0) return false;
    off += static_cast<size_t>(w);
    if (off == data.size()) ::shutdown(host.get(), SHUT_WR);
    return true;
  };
  // The guest returns no credit (and leaves CREDIT_REQUEST unanswered) until
  // neither side has moved for half a second.
  auto last_move = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_move < 500ms) {
    bool moved = write_some();
    while (auto p = g.recv_pkt(5ms)) {
      ASSERT_TRUE(p->hdr.op == op(Op::RW) || p->hdr.op == op(Op::CREDIT_REQUEST)) << vhu::vsock::describe(p->hdr);
      got.insert(got.end(), p->payload.begin(), p->payload.end());
      moved = true;
    }
    if (moved) last_move = std::chrono::steady_clock::now();
  }
  ASSERT_EQ(got.size(), g.buf_alloc) << "the device sent other than the guest's credit";
  EXPECT_GE(off, g.buf_alloc + kReadAhead) << "the device did not read ahead while out of credit";
  EXPECT_LE(off, g.buf_alloc + kReadAhead + 65536) << "the device read more than one window ahead";

  const auto bases = g.stop();
  g.start(false, bases[0], bases[1]);
  // Buffers with room for a header only, among the others from now on: one
  // met while bytes wait read ahead carries credit, not an empty RW.
  g.post_rx(4, vhu::vsock::kHdrSize);
  g.send_pkt(g.hdr(2, 5000, 1234, Op::CREDIT_UPDATE));
  uint32_t since_update = 0;
  while (got.size() < data.size()) {
    write_some();
    auto p = g.recv_pkt(off == data.size() ? 2000ms : 5ms);
    if (!p) {
      ASSERT_LT(off, data.size()) << "stream stalled at " << got.size() << " of " << data.size();
      continue;
    }
    ASSERT_NE(p->hdr.op, op(Op::SHUTDOWN)) << "end of stream after " << got.size() << " of " << data.size();
    ASSERT_NE(p->hdr.op, op(Op::RST));
    ASSERT_TRUE(p->hdr.op != op(Op::RW) || p->hdr.len > 0) << "an RW without payload";
    got.insert(got.end(), p->payload.begin(), p->payload.end());
    since_update += p->hdr.len;
    if (since_update >= 65536 || p->hdr.op == op(Op::CREDIT_REQUEST)) {
      g.send_pkt(g.hdr(2, 5000, 1234, Op::CREDIT_UPDATE));
      since_update = 0;
    }
  }
  EXPECT_TRUE(got == data) << "bytes reordered, lost or repeated";
  auto p = recv_past_credit(g, 5000, 1234);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN));
  EXPECT_EQ(p->hdr.flags, vhu::vsock::kShutdownSend);
}

// All flows together read ahead into at most kReadAheadTotal, whatever the
// host programs write: of one flow more than that holds, all but one read
// ahead and the last reads only within credit, and still gets its whole
// stream, in order, as credit returns.
TEST(Integration, ReadAheadOfAllFlowsTogetherIsBounded) {
  constexpr size_t kFlows = VsockDevice::kReadAheadTotal / VsockDevice::kReadAhead + 1;
  constexpr uint32_t kCredit = 4096;
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  g.buf_alloc = kCredit;
  g.realize(kQemuPf);
  g.post_rx(64);
  g.start();
  const auto data = random_bytes(2 * VsockDevice::kReadAhead, 6);
  struct Flow {
    vhu::UniqueFd host;
    size_t off = 0;
    std::vector<uint8_t> got;
  };
  std::vector<Flow> flows(kFlows);
  const int small = 4096;  // so what a host writes is what the device took
  for (uint32_t i = 0; i < kFlows; ++i) {
    g.fwd_cnt = 0;
    flows[i].host = connect_guest_to_host(h, 5000 + i, 1234, l.get());
    ASSERT_TRUE(flows[i].host.valid()) << "flow " << i;
    ASSERT_EQ(::setsockopt(flows[i].host.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  }
  auto write_some = [&](Flow& f) {
    if (f.off == data.size()) return false;
    const ssize_t w = ::send(f.host.get(), data.data() + f.off, std::min<size_t>(data.size() - f.off, 65536),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w <= 0) return false;
    f.off += static_cast<size_t>(w);
    return true;
  };
  auto flow_of = [&](const Packet& p) -> Flow& {
    EXPECT_GE(p.hdr.dst_port, 5000u);
    EXPECT_LT(p.hdr.dst_port, 5000u + kFlows);
    return flows[std::min<size_t>(p.hdr.dst_port - 5000u, kFlows - 1)];
  };
  // No credit comes back until nothing has moved for half a second.
  auto last_move = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_move < 500ms) {
    bool moved = false;
    for (auto& f : flows) moved |= write_some(f);
    while (auto p = g.recv_pkt(5ms)) {
      ASSERT_TRUE(p->hdr.op == op(Op::RW) || p->hdr.op == op(Op::CREDIT_REQUEST)) << vhu::vsock::describe(p->hdr);
      auto& got = flow_of(*p).got;
      got.insert(got.end(), p->payload.begin(), p->payload.end());
      moved = true;
    }
    if (moved) last_move = std::chrono::steady_clock::now();
  }
  size_t ahead = 0;
  Flow* capped = nullptr;
  for (auto& f : flows) {
    ASSERT_EQ(f.got.size(), kCredit) << "the device sent other than the guest's credit";
    if (f.off >= kCredit + VsockDevice::kReadAhead) {
      ++ahead;
    } else {
      EXPECT_LE(f.off, kCredit + 65536) << "a flow read ahead part of a window";
      capped = &f;
    }
  }
  EXPECT_EQ(ahead, kFlows - 1) << "flows that read ahead, of " << kFlows;
  ASSERT_NE(capped, nullptr);

  // The capped flow's stream, credit by credit; the others keep waiting.
  Flow& f = *capped;
  const auto gport = static_cast<uint32_t>(5000 + (capped - flows.data()));
  auto give_credit = [&] {
    g.fwd_cnt = static_cast<uint32_t>(f.got.size());
    g.send_pkt(g.hdr(2, gport, 1234, Op::CREDIT_UPDATE));
  };
  give_credit();
  while (f.got.size() < data.size()) {
    write_some(f);
    auto p = g.recv_pkt(f.off == data.size() ? 2000ms : 5ms);
    if (!p) {
      ASSERT_LT(f.off, data.size()) << "stream stalled at " << f.got.size() << " of " << data.size();
      continue;
    }
    if (p->hdr.dst_port != gport) continue;  // another flow asking for credit
    ASSERT_TRUE(p->hdr.op == op(Op::RW) || p->hdr.op == op(Op::CREDIT_REQUEST)) << vhu::vsock::describe(p->hdr);
    f.got.insert(f.got.end(), p->payload.begin(), p->payload.end());
    if (f.got.size() % kCredit == 0 || p->hdr.op == op(Op::CREDIT_REQUEST)) give_credit();
  }
  EXPECT_TRUE(f.got == data) << "bytes reordered, lost or repeated";
}

// Linux (6.12.92 and later) resets a connection that queues more packets
// than buf_alloc / SKB_TRUESIZE(0), however few bytes they hold (credit.h). A
// host program writing 100 bytes at a time, each read as it comes, gets the
// guest its share of packets; then the device asks for credit instead of
// sending more, and goes on once the guest reports them consumed.
TEST(Integration, SmallHostWritesStopAtTheGuestsShareOfPackets) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 64);
  ASSERT_TRUE(host.valid());
  const size_t share = g.buf_alloc / PeerCredit::kBytesPerPacket;
  constexpr size_t kWrite = 100;
  const auto data = random_bytes(kWrite * (share + 20), 8);
  std::vector<uint8_t> got;
  size_t packets = 0, off = 0;
  bool asked = false;
  while (off < data.size()) {
    ASSERT_TRUE(write_all(host.get(), data.data() + off, kWrite));
    off += kWrite;
    auto p = g.recv_pkt();
    ASSERT_TRUE(p) << "nothing for the write ending at " << off;
    if (p->hdr.op == op(Op::CREDIT_REQUEST)) {
      asked = true;
      break;
    }
    ASSERT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
    got.insert(got.end(), p->payload.begin(), p->payload.end());
    ++packets;
  }
  ASSERT_TRUE(asked) << packets << " packets of " << kWrite << " bytes sent, the guest's share is " << share;
  EXPECT_EQ(packets, share);
  EXPECT_EQ(got.size(), share * kWrite) << "bytes are not what stopped the device";
  g.send_pkt(g.hdr(2, 5000, 1234, Op::CREDIT_UPDATE));  // all of them consumed
  for (;;) {
    auto p = g.recv_pkt();
    ASSERT_TRUE(p) << "stalled at " << got.size() << " of " << data.size();
    ASSERT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
    got.insert(got.end(), p->payload.begin(), p->payload.end());
    if (got.size() >= off) {
      if (off == data.size()) break;
      ASSERT_TRUE(write_all(host.get(), data.data() + off, kWrite));
      off += kWrite;
    }
  }
  EXPECT_TRUE(got == data) << "bytes reordered, lost or repeated";
}

// The host's bytes end exactly where the guest's credit does: nothing more is
// there to send, so the device asks for no credit. When a byte follows, it
// asks, and the byte comes once credit does.
TEST(Integration, NoCreditRequestWhenTheHostsBytesEndWithTheCredit) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  g.buf_alloc = 1000;  // less than an rx buffer holds: one read takes it all
  auto host = start_and_connect(h, l.get(), 8);
  ASSERT_TRUE(host.valid());
  const auto data = random_bytes(g.buf_alloc + 1, 9);
  ASSERT_TRUE(write_all(host.get(), data.data(), g.buf_alloc));
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::RW));
  ASSERT_EQ(p->hdr.len, g.buf_alloc);
  p = g.recv_pkt(300ms);
  EXPECT_FALSE(p) << "asked for credit with nothing to send: " << vhu::vsock::describe(p->hdr);
  ASSERT_TRUE(write_all(host.get(), data.data() + g.buf_alloc, 1));
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::CREDIT_REQUEST)) << vhu::vsock::describe(p->hdr);
  g.send_pkt(g.hdr(2, 5000, 1234, Op::CREDIT_UPDATE));
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
  EXPECT_EQ(p->payload, std::vector<uint8_t>(data.end() - 1, data.end()));
}

// The host ends its stream right after its last byte filled the guest's
// window: SHUTDOWN takes no credit, so the guest hears of the end without
// having to return credit first (a guest application waiting for the end
// before it reads would otherwise wait for ever). A half-close gives
// SHUTDOWN(SEND), a close SHUTDOWN(SEND|RCV), and a close after a half-close
// SHUTDOWN(SEND|RCV) again; a half-close while the device is stopped is told
// once it runs again.
TEST(Integration, HostEndOfStreamReachesAGuestWithNoCreditLeft) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  g.post_rx(64);
  g.start();
  const auto data = random_bytes(g.buf_alloc, 5);
  // The next packet that is not about credit (a CREDIT_REQUEST goes unanswered).
  auto next_not_credit = [&g] {
    std::optional<Packet> p;
    do {
      p = g.recv_pkt();
    } while (p && (p->hdr.op == op(Op::CREDIT_REQUEST) || p->hdr.op == op(Op::CREDIT_UPDATE)));
    return p;
  };
  enum End { kHalfClose, kClose, kHalfCloseWhileStopped };
  for (const End end : {kHalfClose, kClose, kHalfCloseWhileStopped}) {
    const bool close_both = end == kClose;
    const uint32_t gport = 5000 + static_cast<uint32_t>(end);
    g.fwd_cnt = 0;  // the test guest counts one flow at a time
    auto host = connect_guest_to_host(h, gport, 1234, l.get());
    ASSERT_TRUE(host.valid());
    ASSERT_TRUE(write_all(host.get(), data.data(), data.size()));
    std::vector<uint8_t> got;
    while (got.size() < data.size()) {
      auto p = g.recv_pkt();
      ASSERT_TRUE(p) << "stalled at " << got.size();
      ASSERT_EQ(p->hdr.dst_port, gport);
      if (p->hdr.op == op(Op::RW)) got.insert(got.end(), p->payload.begin(), p->payload.end());
    }
    ASSERT_TRUE(got == data);
    if (end == kHalfCloseWhileStopped) {
      // Whatever the device asked for before the stop, it has been asked.
      while (auto q = g.recv_pkt(200ms)) ASSERT_EQ(q->hdr.len, 0u);
      const auto bases = g.stop();
      ::shutdown(host.get(), SHUT_WR);
      std::this_thread::sleep_for(100ms);
      g.start(false, bases[0], bases[1]);
    } else if (close_both) {
      host.reset();
    } else {
      ::shutdown(host.get(), SHUT_WR);
    }
    std::optional<Packet> p = next_not_credit();
    ASSERT_TRUE(p) << "no SHUTDOWN while the guest had no credit to give";
    EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN)) << vhu::vsock::describe(p->hdr);
    EXPECT_EQ(p->hdr.dst_port, gport);
    EXPECT_EQ(p->hdr.flags, close_both ? vhu::vsock::kShutdownSend | vhu::vsock::kShutdownRcv
                                       : vhu::vsock::kShutdownSend);
    if (close_both) continue;
    // The close after a half-close: the host reads no more either.
    host.reset();
    p = next_not_credit();
    ASSERT_TRUE(p) << "nothing for the host's close after its half-close";
    EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN)) << vhu::vsock::describe(p->hdr);
    EXPECT_EQ(p->hdr.flags, vhu::vsock::kShutdownSend | vhu::vsock::kShutdownRcv);
  }
}

TEST(Integration, DriverResetClosesHostConnections) {
  Harness h;
  auto l = listen_port(h.cfg.uds_path, 1234);
  Guest& g = *h.guest;
  auto host = start_and_connect(h, l.get(), 16);
  ASSERT_TRUE(host.valid());
  g.stop();
  g.start(false, 0, 0);  // base 0 after traffic: the driver re-initialised the rings
  uint8_t buf[4];
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 0);
}

TEST(Integration, ResetDeviceKeepsMemoryRegions) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf | vhu::bit(pf::RESET_DEVICE));
  g.start();
  g.stop();
  g.send(vhu::Message::empty(static_cast<uint32_t>(FrontendReq::RESET_DEVICE)));
  EXPECT_EQ(g.request_u64(vhu::Message::empty(static_cast<uint32_t>(FrontendReq::GET_STATUS))), 0u);
  // Ring addresses translate without a new memory table.
  vhu::VringAddr a{1, 0, g.ram.uva(g.txq.desc_gpa()), g.ram.uva(g.txq.used_gpa()), g.ram.uva(g.txq.avail_gpa()), 0};
  g.send(vhu::Message::request_with(static_cast<uint32_t>(FrontendReq::SET_VRING_NUM), vhu::VringState{1, 128}));
  EXPECT_EQ(g.request_u64(vhu::Message::request_with(static_cast<uint32_t>(FrontendReq::SET_VRING_ADDR), a, true)),
            0u);
}

// Loads a device state into a fresh session, as a QEMU 10 destination does:
// before SET_FEATURES, memory or rings.
void load_state(Guest& g, bool check_early) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  auto m = vhu::Message::request_with(static_cast<uint32_t>(FrontendReq::SET_DEVICE_STATE_FD),
                                      vhu::DeviceStateParams{1, 0});
  m.fds.emplace_back(p[0]);
  EXPECT_EQ(g.request_u64(std::move(m)), 0x100u);
  DeviceState s;
  s.guest_cid = 3;
  s.config = {3};
  s.features = g.features;
  const auto blob = serialize_device_state(s);
  if (check_early) {
    // CHECK_DEVICE_STATE while the load is still being read: no answer yet.
    g.send(vhu::Message::empty(static_cast<uint32_t>(FrontendReq::CHECK_DEVICE_STATE)));
    auto r = g.chan.recv(300);
    EXPECT_FALSE(r.ok()) << "answered before the transfer completed";
    ASSERT_EQ(::write(p[1], blob.data(), blob.size()), static_cast<ssize_t>(blob.size()));
    ::close(p[1]);
    r = g.chan.recv(3000);
    ASSERT_TRUE(r.ok());
    auto v = vhu::payload_u64(vhu::Plane::Frontend, *r);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, 0u);
  } else {
    ASSERT_EQ(::write(p[1], blob.data(), blob.size()), static_cast<ssize_t>(blob.size()));
    ::close(p[1]);
    EXPECT_EQ(g.request_u64(vhu::Message::empty(static_cast<uint32_t>(FrontendReq::CHECK_DEVICE_STATE))), 0u);
  }
}

TEST(Integration, TransportResetComesFirstAndGatesHostConnects) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf | vhu::bit(pf::DEVICE_STATE));
  load_state(g, /*check_early=*/true);
  g.post_rx(16);
  g.post_event(4);
  // Before the event: a guest packet already queued, a host connect waiting.
  g.send_pkt(g.hdr(2, 5000, 4321, Op::REQUEST));
  auto host = host_connect(h.cfg.uds_path, 6000);
  std::this_thread::sleep_for(50ms);
  g.start(/*with_event=*/true);
  auto ev = g.recv_event();
  ASSERT_TRUE(ev) << "no TRANSPORT_RESET";
  EXPECT_EQ(*ev, 4u);
  // The queued REQUEST is answered (RST: nobody listens) after the event...
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::RST));
  EXPECT_EQ(p->hdr.dst_port, 5000u);
  // ...but the host's connection waits for the driver's config read.
  EXPECT_FALSE(g.recv_pkt(200ms));
  uint8_t zero[8] = {};
  auto r = g.request(vhu::make_config_message(static_cast<uint32_t>(FrontendReq::GET_CONFIG),
                                              vhu::ConfigHeader{0, 8, 0}, zero, false),
                     true);
  ASSERT_TRUE(r.ok());
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::REQUEST));
  EXPECT_EQ(p->hdr.dst_port, 6000u);
}

TEST(Integration, FrontEndKeepingTheEventQueueActivatesAtStart) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf | vhu::bit(pf::DEVICE_STATE));
  load_state(g, false);
  g.post_rx(16);
  auto host = host_connect(h.cfg.uds_path, 6000);
  g.start(/*with_event=*/false);  // QEMU: rings 0 and 1 only
  auto p = g.recv_pkt();
  ASSERT_TRUE(p) << "device left inactive";
  EXPECT_EQ(p->hdr.op, op(Op::REQUEST));
}

// A running device with a SEQPACKET connection from guest port `guest_port`
// to a SOCK_SEQPACKET host listener on `host_port`; `host` is the host's end.
void open_seqpacket(Harness& h, uint32_t guest_port, uint32_t host_port, vhu::UniqueFd& host) {
  auto l = vhu::UniqueFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string path = h.cfg.uds_path + "_" + std::to_string(host_port);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l.get(), 4), 0);
  Guest& g = *h.guest;
  g.type = vhu::vsock::kTypeSeqpacket;
  g.realize(kQemuPf);
  g.post_rx(32);
  g.start();
  g.send_pkt(g.hdr(2, guest_port, host_port, Op::REQUEST));
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::RESPONSE));
  host = vhu::UniqueFd(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(host.valid());
}

TEST(Integration, SeqpacketKeepsMessageBoundaries) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5000, 7000, host));
  std::optional<Packet> p;
  // One message in two RW packets, EOM on the second.
  auto a = g.hdr(2, 5000, 7000, Op::RW, 3);
  g.send_pkt(a, {'a', 'b', 'c'});
  auto b = g.hdr(2, 5000, 7000, Op::RW, 2);
  b.flags = vhu::vsock::kSeqEom;
  g.send_pkt(b, {'d', 'e'});
  uint8_t buf[64];
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, 0), 5);
  // Host to guest: one message of 6000 bytes spans two rx buffers.
  const auto msg = random_bytes(6000, 4);
  ASSERT_EQ(::send(host.get(), msg.data(), msg.size(), 0), 6000);
  std::vector<uint8_t> got;
  for (;;) {
    p = g.recv_pkt();
    ASSERT_TRUE(p);
    ASSERT_EQ(p->hdr.op, op(Op::RW));
    got.insert(got.end(), p->payload.begin(), p->payload.end());
    if (p->hdr.flags & vhu::vsock::kSeqEom) break;
  }
  EXPECT_TRUE(got == msg);
}

// Each host message costs the guest one rx buffer: after a message the device
// asks the socket whether another waits, rather than taking a buffer to find
// out and filling it with a CREDIT_UPDATE (one per message until 2026-12-01).
TEST(Integration, SeqpacketHostMessagesTakeOneRxBufferEach) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5001, 7001, host));
  std::optional<Packet> p;
  constexpr int kMessages = 8;
  int rw = 0, other = 0;
  for (int i = 0; i < kMessages; ++i) {
    const auto msg = random_bytes(100, 20 + i);
    ASSERT_EQ(::send(host.get(), msg.data(), msg.size(), 0), 100);
    // Each message alone in the socket when the device reads it.
    while ((p = g.recv_pkt(std::chrono::milliseconds(rw == i + 1 ? 50 : 2000)))) {
      if (p->hdr.op == op(Op::RW)) {
        ++rw;
        EXPECT_TRUE(p->payload == msg) << "message " << i;
        EXPECT_TRUE(p->hdr.flags & vhu::vsock::kSeqEom) << "message " << i;
      } else {
        ++other;
        ADD_FAILURE() << "message " << i << " was followed by " << vhu::vsock::describe(p->hdr);
      }
    }
  }
  EXPECT_EQ(rw, kMessages);
  EXPECT_EQ(other, 0);
}

// A SEQPACKET message of no bytes is a message both ways: neither the end of
// the host's stream (a read of 0 bytes is both) nor held back until the next.
TEST(Integration, SeqpacketEmptyMessagesPassBothWays) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5002, 7002, host));
  std::optional<Packet> p;
  // Host to guest: an empty message, then "abc".
  ASSERT_EQ(::send(host.get(), "", 0, 0), 0);
  ASSERT_EQ(::send(host.get(), "abc", 3, 0), 3);
  for (const size_t want : {size_t{0}, size_t{3}}) {
    p = g.recv_pkt();
    ASSERT_TRUE(p) << "no packet for the message of " << want << " bytes";
    ASSERT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
    EXPECT_EQ(p->hdr.len, want);
    EXPECT_TRUE(p->hdr.flags & vhu::vsock::kSeqEom);
  }
  // Guest to host: an empty message reaches the host before any other.
  auto e = g.hdr(2, 5002, 7002, Op::RW, 0);
  e.flags = vhu::vsock::kSeqEom;
  g.send_pkt(e);
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "the empty message did not reach the host";
  uint8_t buf[16];
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 0);
  auto x = g.hdr(2, 5002, 7002, Op::RW, 3);
  x.flags = vhu::vsock::kSeqEom;
  g.send_pkt(x, {'x', 'y', 'z'});
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 3);
}

// The host's last message, of no bytes, and then its close: both read as 0
// bytes at the device, and the message must not be taken for the close.
TEST(Integration, SeqpacketEmptyMessageBeforeTheHostCloses) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5003, 7003, host));
  ASSERT_EQ(::send(host.get(), "", 0, 0), 0);
  host.reset();
  auto p = g.recv_pkt();
  ASSERT_TRUE(p) << "nothing for the empty message";
  EXPECT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
  EXPECT_EQ(p->hdr.len, 0u);
  EXPECT_TRUE(p->hdr.flags & vhu::vsock::kSeqEom);
  p = g.recv_pkt();
  ASSERT_TRUE(p) << "nothing for the host's close";
  EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN)) << vhu::vsock::describe(p->hdr);
}

// As on a stream: the host's SHUT_WR ends its sending only. SHUTDOWN(SEND);
// RECEIVE too would make a Linux guest fail its next send with EPIPE (until
// 2026-12-02 a SEQPACKET half-close went out as both, and the e2e guest's
// shutdown() after it met ENOTCONN).
TEST(Integration, SeqpacketHostHalfCloseLeavesTheGuestSending) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5004, 7004, host));
  ASSERT_EQ(::send(host.get(), "bye", 3, 0), 3);
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  auto p = g.recv_pkt();
  ASSERT_TRUE(p) << "nothing for the host's last message";
  EXPECT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
  p = g.recv_pkt();
  ASSERT_TRUE(p) << "nothing for the host's half-close";
  EXPECT_EQ(p->hdr.op, op(Op::SHUTDOWN)) << vhu::vsock::describe(p->hdr);
  EXPECT_EQ(p->hdr.flags, vhu::vsock::kShutdownSend);
  auto r = g.hdr(2, 5004, 7004, Op::RW, 5);
  r.flags = vhu::vsock::kSeqEom;
  g.send_pkt(r, {'r', 'e', 'p', 'l', 'y'});
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "the guest's message did not reach the host";
  uint8_t buf[16];
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 5);
  // Its close, now, ends both directions.
  host.reset();
  while ((p = g.recv_pkt()) && p->hdr.op == op(Op::CREDIT_UPDATE)) {
  }
  ASSERT_TRUE(p) << "nothing for the host's close";
  EXPECT_TRUE(p->hdr.op == op(Op::RST) ||
              (p->hdr.op == op(Op::SHUTDOWN) && (p->hdr.flags & vhu::vsock::kShutdownRcv)))
      << vhu::vsock::describe(p->hdr);
}

// The guest's SHUT_WR reaches the host only after all it sent, an empty
// message included: when the host socket is full, the empty message waits in
// the flow with no bytes, and "no bytes left" must not pass for "all sent".
// A Unix socket takes a message while what it holds is below its send buffer,
// so with 64 KiB messages the one that fills it is the one before
// ceil(sndbuf / truesize); the empty message after it finds the socket full.
TEST(Integration, SeqpacketEmptyMessageOnAFullSocketComesBeforeTheShutdown) {
  std::ifstream f("/proc/sys/net/core/wmem_default");
  uint64_t sndbuf = 0;
  f >> sndbuf;
  if (sndbuf == 0) GTEST_SKIP() << "cannot read net.core.wmem_default";
  constexpr uint64_t kMsg = 64u << 10;
  // A 64 KiB message costs its pages and one sk_buff: 64-68 KiB of the buffer.
  const uint64_t fill = (sndbuf + kMsg - 1) / kMsg;
  if (fill != (sndbuf + kMsg + 4096 - 1) / (kMsg + 4096))
    GTEST_SKIP() << "net.core.wmem_default " << sndbuf << ": the message that fills the socket is uncertain";
  Harness h;
  if (fill * kMsg > h.cfg.tx_buffer_size) GTEST_SKIP() << "the messages that fill the socket exceed the credit";
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5006, 7006, host));
  const int one = 1;  // the credentials show only to a reader that asks for them
  ASSERT_EQ(::setsockopt(host.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
  for (uint64_t i = 0; i < fill; ++i) {
    auto m = g.hdr(2, 5006, 7006, Op::RW, static_cast<uint32_t>(kMsg));
    m.flags = vhu::vsock::kSeqEom;
    g.send_pkt(m, random_bytes(kMsg, 40 + static_cast<uint32_t>(i)));
  }
  auto e = g.hdr(2, 5006, 7006, Op::RW, 0);
  e.flags = vhu::vsock::kSeqEom;
  g.send_pkt(e);
  auto shut = g.hdr(2, 5006, 7006, Op::SHUTDOWN);
  shut.flags = vhu::vsock::kShutdownSend;
  g.send_pkt(shut);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // all three with the device
  // The host reads: the messages, the empty one (it carries the back-end's
  // credentials, SO_PASSCRED; the end of the stream carries none), the end.
  std::vector<uint8_t> buf(kMsg + 1);
  for (uint64_t i = 0; i <= fill + 1; ++i) {
    pollfd pfd{host.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "nothing more after " << i << " reads";
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec v{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &v;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(host.get(), &mh, MSG_DONTWAIT);
    if (i < fill) {
      EXPECT_EQ(n, static_cast<ssize_t>(kMsg)) << "message " << i;
    } else if (i == fill) {
      ASSERT_EQ(n, 0);
      EXPECT_GT(mh.msg_controllen, 0u) << "the end of the stream came where the empty message should be";
    } else {
      EXPECT_EQ(n, 0);
      EXPECT_EQ(mh.msg_controllen, 0u) << "a second empty message, not the end of the stream";
    }
  }
}

// A SEQPACKET message still waiting for its EOM cannot go to the host, so the
// loop must not watch the host socket for room meanwhile: it has room, and
// the loop would wake at once, again and again, until the guest ends the
// message (it did until 2026-12-01, at 60 % of a CPU).
TEST(Integration, SeqpacketPartialMessageLeavesTheLoopAsleep) {
  Harness h;
  Guest& g = *h.guest;
  vhu::UniqueFd host;
  ASSERT_NO_FATAL_FAILURE(open_seqpacket(h, 5004, 7004, host));
  g.send_pkt(g.hdr(2, 5004, 7004, Op::RW, 3), {'a', 'b', 'c'});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint64_t before = h.loop.rounds();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_LT(h.loop.rounds() - before, 20u) << "the loop kept waking while the message waited for its EOM";
  auto end = g.hdr(2, 5004, 7004, Op::RW, 2);
  end.flags = vhu::vsock::kSeqEom;
  g.send_pkt(end, {'d', 'e'});
  pollfd pfd{host.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "the message did not reach the host once ended";
  char buf[16];
  EXPECT_EQ(::recv(host.get(), buf, sizeof buf, MSG_DONTWAIT), 5);
  EXPECT_EQ(std::string(buf, 5), "abcde");
}

// A second VM (CID 4) in the harness's loop and group, served through its
// own socketpair; torn down on the loop thread, which owns it.
struct SiblingVm {
  explicit SiblingVm(Harness& h) : h_(h) {
    VmConfig c;
    c.guest_cid = 4;
    c.uds_path = h.dir + "/u4";
    auto pair = vhu::socket_pair();
    if (!pair.ok()) throw std::runtime_error("socketpair: " + pair.message());
    h.on_loop([&] {
      vm_ = std::make_unique<Vm>(h.loop, c, &h.router);
      vm_->serve(std::move(pair->second));
    });
    guest = std::make_unique<Guest>(std::move(pair->first), 4);
  }
  ~SiblingVm() {
    guest.reset();
    h_.on_loop([&] { vm_.reset(); });
  }
  std::unique_ptr<Guest> guest;

 private:
  Harness& h_;
  std::unique_ptr<Vm> vm_;
};

// Both guests started, CID 4's with `rx4` rx buffers, and a stream from
// CID 3 port 5000 to CID 4 port 80 opened through the relay, each packet
// from the other VM's CID.
void open_sibling_stream(Guest& g, Guest& g2, int rx4) {
  g.realize(kQemuPf);
  g2.realize(kQemuPf);
  g.post_rx(16);
  g2.post_rx(rx4);
  g.start();
  g2.start();
  g.send_pkt(g.hdr(4, 5000, 80, Op::REQUEST));
  auto p = g2.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::REQUEST));
  EXPECT_EQ(p->hdr.src_cid, 3u);
  g2.send_pkt(g2.hdr(3, 80, 5000, Op::RESPONSE));
  p = g.recv_pkt();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->hdr.op, op(Op::RESPONSE));
  EXPECT_EQ(p->hdr.src_cid, 4u);
}

TEST(Integration, SiblingsInOneGroupReachEachOther) {
  Harness h;
  SiblingVm sib(h);
  ASSERT_NO_FATAL_FAILURE(open_sibling_stream(*h.guest, *sib.guest, 16));
}

TEST(Integration, SiblingPacketsWaitForTheConfigReadAfterALoad) {
  Harness h;
  SiblingVm sib(h);
  Guest& g2 = *sib.guest;
  g2.realize(kQemuPf);
  g2.post_rx(16);
  g2.start();
  Guest& g = *h.guest;
  g.realize(kQemuPf | vhu::bit(pf::DEVICE_STATE));
  load_state(g, false);
  g.post_rx(16);
  g.post_event(4);
  g.start(/*with_event=*/true);
  ASSERT_TRUE(g.recv_event()) << "no TRANSPORT_RESET";
  // The sibling's REQUEST is held, not refused, until the config read.
  g2.send_pkt(g2.hdr(3, 5000, 80, Op::REQUEST));
  EXPECT_FALSE(g.recv_pkt(200ms));
  EXPECT_FALSE(g2.recv_pkt(1ms));
  uint8_t zero[8] = {};
  auto r = g.request(vhu::make_config_message(static_cast<uint32_t>(FrontendReq::GET_CONFIG),
                                              vhu::ConfigHeader{0, 8, 0}, zero, false),
                     true);
  ASSERT_TRUE(r.ok());
  auto p = g.recv_pkt();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hdr.op, op(Op::REQUEST));
  EXPECT_EQ(p->hdr.src_cid, 4u);
  EXPECT_EQ(p->hdr.dst_port, 80u);
}

// A sibling's small packets are metered in packets too, as a host program's
// are (PeerCredit): the sending guest meters bytes only, and a Linux receiver
// resets a flow that holds more than buf_alloc / 576 packets unread.
TEST(Integration, SiblingPacketsWithinTheReceiversPacketShare) {
  Harness h;
  SiblingVm sib(h);
  Guest& g2 = *sib.guest;
  Guest& g = *h.guest;
  g2.buf_alloc = 32 * 1024;  // room for 32 packets, at PeerCredit's 1 KiB each
  const size_t share = g2.buf_alloc / PeerCredit::kBytesPerPacket;
  ASSERT_NO_FATAL_FAILURE(open_sibling_stream(g, g2, 64));
  std::optional<Packet> p;
  constexpr int kPackets = 50;
  constexpr uint32_t kLen = 10;
  for (int i = 0; i < kPackets; ++i)
    g.send_pkt(g.hdr(4, 5000, 80, Op::RW, kLen), std::vector<uint8_t>(kLen, static_cast<uint8_t>(i)));
  int got = 0;
  auto take = [&](std::chrono::milliseconds wait) {
    while ((p = g2.recv_pkt(wait))) {
      ASSERT_EQ(p->hdr.op, op(Op::RW)) << vhu::vsock::describe(p->hdr);
      ASSERT_EQ(p->payload, std::vector<uint8_t>(kLen, static_cast<uint8_t>(got))) << "packet " << got;
      ++got;
    }
  };
  ASSERT_NO_FATAL_FAILURE(take(300ms));
  EXPECT_EQ(static_cast<size_t>(got), share) << "packets the receiving guest held before it read any";
  // The receiver reads them all and says so; the rest follow, in order.
  g2.fwd_cnt = static_cast<uint32_t>(got) * kLen;
  g2.send_pkt(g2.hdr(3, 80, 5000, Op::CREDIT_UPDATE));
  ASSERT_NO_FATAL_FAILURE(take(300ms));
  EXPECT_EQ(got, kPackets);
}

TEST(Integration, SurplusFdsDoNotAccumulate) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(kQemuPf);
  auto count = [] {
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) (void)e, ++n;
    return n;
  };
  const int before = count();
  for (int i = 0; i < 50; ++i) {
    auto m = vhu::Message::empty(static_cast<uint32_t>(FrontendReq::GET_FEATURES));
    for (int k = 0; k < 3; ++k) m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    g.request_u64(std::move(m));
  }
  EXPECT_LE(count(), before + 2);
}

}  // namespace
}  // namespace vsockref::test
