// A malformed chain stops its ring until the front-end sets it up again, and
// the back-end says so (conformance case robustness.ring_error_reported): on
// the ring's err eventfd, which QEMU watches, and as DEVICE_NEEDS_RESET in
// GET_STATUS, which QEMU reads at start and writes back with FEATURES_OK.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include "test_guest.h"
#include "vhu/features.h"

namespace vsockref::test {
namespace {

using namespace std::chrono_literals;
using vhu::FrontendReq;
namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

uint32_t id(FrontendReq r) { return static_cast<uint32_t>(r); }

uint64_t status(Guest& g) { return g.request_u64(vhu::Message::empty(id(FrontendReq::GET_STATUS))); }

// Signals counted on an eventfd within `ms`; 0 when none came.
uint64_t signals(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) != 1) return 0;
  uint64_t n = 0;
  return ::read(fd, &n, sizeof n) == sizeof n ? n : 0;
}

// Puts on tx a chain whose descriptor's next is past the table, with a
// REQUEST to `port` in it; returns the avail index it took.
uint16_t publish_malformed_chain(Guest& g, uint32_t port) {
  const uint64_t buf = g.ram.alloc(vs::kHdrSize, 64, 0);
  vs::encode(g.hdr(2, 5000, port, vs::Op::REQUEST),
             std::span<uint8_t, vs::kHdrSize>(g.ram.host(buf), vs::kHdrSize));
  const uint16_t d = Guest::kQueueSize - 1;  // the driver hands out low descriptors first
  g.txq.desc_table()[d] = {buf, static_cast<uint32_t>(vs::kHdrSize), vhu::vring::kDescFNext,
                           static_cast<uint16_t>(Guest::kQueueSize + 7)};
  const uint16_t idx = g.txq.avail_idx();
  g.txq.avail_ring()[idx % Guest::kQueueSize] = d;
  g.txq.set_avail_idx_raw(static_cast<uint16_t>(idx + 1));
  return idx;
}

TEST(RingError, ReportedUntilTheRingIsSetUpAgain) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(vhu::bit(pf::REPLY_ACK) | vhu::bit(pf::STATUS));
  g.start();
  ASSERT_EQ(status(g), vhu::status::FEATURES_OK);
  auto l = listen_port(h.cfg.uds_path, 1234);
  const uint16_t bad = publish_malformed_chain(g, 1234);
  g.send_pkt(g.hdr(2, 5001, 1234, vs::Op::REQUEST));  // behind it, and kicked

  EXPECT_EQ(signals(g.err_fd[1].get(), 2000), 1u);
  EXPECT_EQ(signals(g.err_fd[0].get(), 0), 0u);
  EXPECT_FALSE(accept_one(l.get(), 200ms).valid()) << "tx went on past the malformed chain";
  EXPECT_EQ(status(g), vhu::status::FEATURES_OK | vhu::status::DEVICE_NEEDS_RESET);

  // A front-end writing the bit back does not make it stick.
  g.send(vhu::Message::request_with(id(FrontendReq::SET_STATUS),
                                    uint64_t{vhu::status::FEATURES_OK | vhu::status::DEVICE_NEEDS_RESET}));
  const auto bases = g.stop();
  EXPECT_EQ(bases[1], bad) << "GET_VRING_BASE: the malformed chain is the next to process";
  // The driver steps over the entry (as after its own reset) and QEMU starts again.
  g.start(false, bases[0], static_cast<uint16_t>(bad + 1));
  EXPECT_EQ(status(g), vhu::status::FEATURES_OK);
  EXPECT_TRUE(accept_one(l.get()).valid()) << "the REQUEST behind the chain, once tx is set up again";
  EXPECT_EQ(signals(g.err_fd[1].get(), 0), 0u);
}

TEST(RingError, ResetDeviceClearsTheReport) {
  Harness h;
  Guest& g = *h.guest;
  g.realize(vhu::bit(pf::REPLY_ACK) | vhu::bit(pf::STATUS) | vhu::bit(pf::RESET_DEVICE));
  g.start();
  publish_malformed_chain(g, 1234);
  g.kick(1);
  ASSERT_EQ(signals(g.err_fd[1].get(), 2000), 1u);
  g.send(vhu::Message::empty(id(FrontendReq::RESET_DEVICE)));
  EXPECT_EQ(status(g), 0u);
}

}  // namespace
}  // namespace vsockref::test
