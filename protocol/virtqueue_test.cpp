#include "vhu/virtqueue.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "vhu/dirty_log.h"
#include "vhu/virtqueue_driver.h"

namespace vhu {
namespace {

// Guest RAM: two regions adjacent in guest-physical space, cut from one
// memfd, at front-end virtual addresses unrelated to their gpas. The test
// maps the memfd a second time, as the runner's guest would, so the driver
// writes through one mapping and the device reads through another.
constexpr uint64_t kRegionSize = 0x100000;
constexpr uint64_t kGpa0 = 0x100000;
constexpr uint64_t kGpa1 = kGpa0 + kRegionSize;
constexpr uint64_t kGpaEnd = kGpa1 + kRegionSize;  // nothing mapped from here on
constexpr uint64_t kUva0 = 0x7f1200000000;
constexpr uint64_t kUva1 = 0x5a0000000000;
constexpr uint64_t kRingGpa = kGpa0;
constexpr uint64_t kBufGpa = kGpa0 + 0x80000;
constexpr uint64_t kTableGpa = kGpa0 + 0x70000;  // hand-built indirect tables

using vring::Desc;
using vring::kDescFIndirect;
using vring::kDescFNext;
using vring::kDescFWrite;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

DriverBuffer rd(uint64_t off, uint32_t len) { return {kBufGpa + off, len, false}; }
DriverBuffer wr(uint64_t off, uint32_t len) { return {kBufGpa + off, len, true}; }

class VirtQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UniqueFd fd(memfd_create("vhu-virtqueue-test", MFD_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(ftruncate(fd.get(), 2 * kRegionSize), 0);
    void* p = mmap(nullptr, 2 * kRegionSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    runner_ = static_cast<uint8_t*>(p);
    UniqueFd fd1(dup(fd.get()));
    auto r = mem_.add_region(MemoryRegion{kGpa0, kRegionSize, kUva0, 0}, std::move(fd));
    ASSERT_TRUE(r.ok()) << r.message();
    r = mem_.add_region(MemoryRegion{kGpa1, kRegionSize, kUva1, kRegionSize}, std::move(fd1));
    ASSERT_TRUE(r.ok()) << r.message();
  }
  void TearDown() override {
    if (runner_) munmap(runner_, 2 * kRegionSize);
  }

  uint8_t* host(uint64_t gpa) { return runner_ + (gpa - kGpa0); }
  uint64_t uva(uint64_t gpa) { return gpa < kGpa1 ? kUva0 + (gpa - kGpa0) : kUva1 + (gpa - kGpa1); }

  // A driver queue at kRingGpa and a device queue pointed at it.
  void start(uint32_t size, DeviceQueue::Options opt = {}) {
    auto r = drv_.init(host(kRingGpa), kRingGpa, size, opt.event_idx);
    ASSERT_TRUE(r.ok()) << r.message();
    r = dev_.setup_gpa(mem_, size, drv_.desc_gpa(), drv_.avail_gpa(), drv_.used_gpa(), opt);
    ASSERT_TRUE(r.ok()) << r.message();
  }

  uint16_t add(std::vector<DriverBuffer> bufs, bool indirect = false) {
    auto r = drv_.add(bufs, indirect);
    EXPECT_TRUE(r.ok()) << r.message();
    return r.ok() ? *r : 0xffff;
  }
  uint16_t add_publish(std::vector<DriverBuffer> bufs, bool indirect = false) {
    const uint16_t head = add(std::move(bufs), indirect);
    drv_.publish();
    return head;
  }

  // Places a hand-built chain head in the avail ring and publishes it.
  void publish_head(uint16_t head) {
    drv_.avail_ring()[drv_.avail_idx() % drv_.size()] = head;
    drv_.set_avail_idx_raw(static_cast<uint16_t>(drv_.avail_idx() + 1));
  }
  void write_table(uint64_t gpa, const std::vector<Desc>& entries) {
    std::memcpy(host(gpa), entries.data(), entries.size() * sizeof(Desc));
  }

  Chain pop_one() {
    auto r = dev_.pop();
    EXPECT_TRUE(r.ok()) << r.message();
    if (!r.ok() || !r->has_value()) {
      ADD_FAILURE() << "no chain available";
      return {};
    }
    return std::move(**r);
  }

  // The next pop must fail with a message containing `part` and leave
  // last_avail where it was.
  void expect_rejected(const std::string& part) {
    const uint16_t before = dev_.last_avail();
    auto r = dev_.pop();
    ASSERT_FALSE(r.ok()) << "a chain was accepted that should fail with: " << part;
    EXPECT_TRUE(has(r.message(), part)) << r.message();
    EXPECT_EQ(dev_.last_avail(), before);
  }

  GuestMemory mem_;
  uint8_t* runner_ = nullptr;
  DriverQueue drv_;
  DeviceQueue dev_;
};

// ---- setup ----

TEST_F(VirtQueueTest, RejectsNonPowerOfTwoSize) {
  for (uint32_t size : {0u, 3u, 100u, 257u, 32767u}) {
    auto r = dev_.setup_gpa(mem_, size, kRingGpa, kRingGpa + 0x10000, kRingGpa + 0x20000, {});
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_TRUE(has(r.message(), fmt::format("queue size {}", size))) << r.message();
    EXPECT_FALSE(dev_.ready());
  }
}

TEST_F(VirtQueueTest, RejectsSizeOver32768) {
  auto r = dev_.setup_gpa(mem_, 65536, kGpa0, kGpa1, kGpa1 + 0x40000, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "queue size 65536 exceeds the maximum 32768")) << r.message();
  // The largest legal queue fits in region 0 and is accepted.
  r = dev_.setup_gpa(mem_, 32768, kGpa0, kGpa0 + 0x80000, kGpa0 + 0x90008, {});
  EXPECT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(dev_.size(), 32768u);
}

TEST_F(VirtQueueTest, RejectsRingOutsideMemory) {
  const uint32_t n = 256;
  const uint64_t d = kRingGpa, a = kRingGpa + 0x1000, u = kRingGpa + 0x2000;
  ASSERT_TRUE(dev_.setup_gpa(mem_, n, d, a, u, {}).ok());
  dev_.reset();

  auto r = dev_.setup_gpa(mem_, n, 0x1000, a, u, {});  // below every region
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "descriptor table at gpa 0x1000 (4096 bytes) is not inside guest memory"))
      << r.message();
  // The used ring runs past the end of the last region.
  r = dev_.setup_gpa(mem_, n, d, a, kGpaEnd - 0x100, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "used ring at gpa 0x2fff00")) << r.message();
  // Even across two adjacent regions: each part needs one host pointer.
  r = dev_.setup_gpa(mem_, n, d, kGpa1 - 0x10, u, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "avail ring at gpa 0x1ffff0 (518 bytes)")) << r.message();
  // Guest-physical addresses are not front-end virtual ones.
  r = dev_.setup_uva(mem_, n, d, a, u, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "descriptor table at userspace address 0x100000")) << r.message();
  EXPECT_FALSE(dev_.ready());
}

TEST_F(VirtQueueTest, RejectsMisalignedRing) {
  const uint32_t n = 64;
  const uint64_t d = kRingGpa, a = kRingGpa + 0x1000, u = kRingGpa + 0x2000;
  auto r = dev_.setup_gpa(mem_, n, d + 8, a, u, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "descriptor table at gpa 0x100008 is not 16-byte aligned")) << r.message();
  r = dev_.setup_gpa(mem_, n, d, a + 1, u, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "avail ring at gpa 0x101001 is not 2-byte aligned")) << r.message();
  r = dev_.setup_gpa(mem_, n, d, a, u + 2, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "used ring at gpa 0x102002 is not 4-byte aligned")) << r.message();
  r = dev_.setup_uva(mem_, n, uva(d), uva(a), uva(u) + 2, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "used ring at userspace address 0x7f1200002002 is not 4-byte aligned")) << r.message();
  EXPECT_FALSE(dev_.ready());
  // The minimum alignments themselves are fine.
  r = dev_.setup_gpa(mem_, n, d + 16, a + 2, u + 4, {});
  EXPECT_TRUE(r.ok()) << r.message();
  dev_.reset();

  // A region mapped from an odd file offset turns aligned guest addresses
  // into misaligned host pointers; only the rings accessed atomically care.
  UniqueFd fd(memfd_create("vhu-virtqueue-odd", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(fd.get(), 0x20000), 0);
  const uint64_t odd = 0x400000;
  ASSERT_TRUE(mem_.add_region(MemoryRegion{odd, 0x10000, 0x6b0000000000, 1}, std::move(fd)).ok());
  r = dev_.setup_gpa(mem_, n, odd, a, u, {});
  EXPECT_TRUE(r.ok()) << r.message();
  dev_.reset();
  r = dev_.setup_gpa(mem_, n, d, odd + 0x1000, u, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "avail ring at gpa 0x401000 maps to a host address that is not 2-byte aligned"))
      << r.message();
  r = dev_.setup_gpa(mem_, n, d, a, odd + 0x2000, {});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "used ring at gpa 0x402000 maps to a host address that is not 4-byte aligned"))
      << r.message();
}

TEST_F(VirtQueueTest, SetupByUserspaceAddress) {
  ASSERT_TRUE(drv_.init(host(kRingGpa), kRingGpa, 64, false).ok());
  auto r = dev_.setup_uva(mem_, 64, uva(drv_.desc_gpa()), uva(drv_.avail_gpa()), uva(drv_.used_gpa()), {});
  ASSERT_TRUE(r.ok()) << r.message();
  const uint16_t head = add_publish({rd(0, 10), wr(0x100, 20)});
  Chain c = pop_one();
  EXPECT_EQ(c.head, head);
  ASSERT_TRUE(dev_.push(head, 20).ok());
  auto e = drv_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, head);
  EXPECT_EQ(e->len, 20u);
}

TEST_F(VirtQueueTest, NotReadyQueueReportsErrors) {
  EXPECT_FALSE(dev_.ready());
  EXPECT_FALSE(dev_.pop().ok());
  EXPECT_FALSE(dev_.pending().ok());
  EXPECT_FALSE(dev_.push(0, 0).ok());
  EXPECT_FALSE(dev_.should_notify());
  dev_.enable_notifications(true);  // must not touch anything
}

// ---- avail ring ----

TEST_F(VirtQueueTest, RejectsAvailIdxTooFarAhead) {
  start(256);
  dev_.set_last_avail(256);
  drv_.set_avail_idx_raw(700);
  auto p = dev_.pending();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.message(), "avail idx 700 is 444 ahead of last_avail 256, more than queue size 256");
  expect_rejected("avail idx 700 is 444 ahead of last_avail 256, more than queue size 256");
  // Exactly `size` ahead is a full ring, which is legal.
  drv_.set_avail_idx_raw(512);
  p = dev_.pending();
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ(*p, 256);
}

TEST_F(VirtQueueTest, RejectsHeadOutOfRange) {
  start(256);
  add({rd(0, 8)});
  drv_.avail_ring()[0] = 256;
  drv_.publish();
  expect_rejected("avail ring entry 0 (avail index 0): head 256 >= queue size 256");
}

TEST_F(VirtQueueTest, PopsNothingFromEmptyRing) {
  start(16);
  auto r = dev_.pop();
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_FALSE(r->has_value());
  // Added but not published is still invisible.
  add({rd(0, 8)});
  r = dev_.pop();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(*dev_.pending(), 0);
  drv_.publish();
  EXPECT_EQ(*dev_.pending(), 1);
}

// ---- descriptor chains ----

TEST_F(VirtQueueTest, RejectsNextOutOfRange) {
  start(256);
  const uint16_t head = add_publish({rd(0, 8), wr(0x100, 8)});
  drv_.desc_table()[head].next = 4096;
  expect_rejected("descriptor 0: next 4096 >= queue size 256");
}

TEST_F(VirtQueueTest, SkipStepsOverAMalformedChain) {
  start(256);
  const uint16_t bad = add_publish({rd(0, 8), wr(0x100, 8)});
  drv_.desc_table()[bad].next = 4096;
  const uint16_t good = add_publish({rd(0x200, 8)});
  expect_rejected("next 4096");
  auto s = dev_.skip();
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ(**s, bad);
  ASSERT_TRUE(dev_.push(**s, 0).ok());
  EXPECT_EQ(pop_one().head, good);
  s = dev_.skip();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->has_value());  // nothing left to step over
  EXPECT_EQ(dev_.last_avail(), 2);
}

TEST_F(VirtQueueTest, SkipOfAHeadOutOfRangeLeavesPushToRefuseIt) {
  start(256);
  add({rd(0, 8)});
  drv_.avail_ring()[0] = 256;
  drv_.publish();
  auto s = dev_.skip();
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ(**s, 256);
  EXPECT_FALSE(dev_.push(**s, 0).ok());
  EXPECT_EQ(dev_.last_avail(), 1);
}

TEST_F(VirtQueueTest, RejectsLoop) {
  start(256);
  add_publish({rd(0, 8), rd(0x100, 8), rd(0x200, 8)});
  // 0 -> 1 -> 2 -> 1 -> ...
  drv_.desc_table()[2].flags |= kDescFNext;
  drv_.desc_table()[2].next = 1;
  expect_rejected("chain from head 0 loops");
}

TEST_F(VirtQueueTest, RejectsLoopInIndirectTable) {
  start(256, {.indirect = true});
  add_publish({rd(0, 8), rd(0x100, 8), rd(0x200, 8)}, true);
  Desc* table = reinterpret_cast<Desc*>(host(drv_.desc_table()[0].addr));
  table[2].flags |= kDescFNext;
  table[2].next = 0;
  expect_rejected("descriptor 0: indirect chain loops");
}

TEST_F(VirtQueueTest, RejectsChainLongerThanQueue) {
  start(8, {.indirect = true});
  // An indirect table may hold more descriptors than the queue has, but the
  // chain it describes may not.
  std::vector<DriverBuffer> nine;
  for (uint32_t i = 0; i < 9; ++i) nine.push_back(rd(0x100 * i, 8));
  add_publish(nine, true);
  expect_rejected("chain from head 0 is longer than queue size 8");

  // Direct descriptors count too: 5 direct, then 4 in a table.
  dev_.reset();
  start(8, {.indirect = true});
  std::vector<Desc> table;
  for (uint16_t i = 0; i < 4; ++i)
    table.push_back(Desc{kBufGpa, 8, static_cast<uint16_t>(i < 3 ? kDescFNext : 0), static_cast<uint16_t>(i + 1)});
  write_table(kTableGpa, table);
  Desc* d = drv_.desc_table();
  for (uint16_t i = 0; i < 5; ++i) d[i] = Desc{kBufGpa, 8, kDescFNext, static_cast<uint16_t>(i + 1)};
  d[5] = Desc{kTableGpa, 4 * 16, kDescFIndirect, 0};
  publish_head(0);
  expect_rejected("chain from head 0 is longer than queue size 8 (5 direct descriptors");

  // Exactly the queue size is fine (the descriptor naming the table holds
  // no buffer and does not count).
  table.resize(3);
  table[2].flags = 0;
  write_table(kTableGpa, table);
  d[5].len = 3 * 16;
  Chain c = pop_one();
  EXPECT_EQ(c.segments.size(), 8u);
}

TEST_F(VirtQueueTest, RejectsAddressOutsideMemory) {
  start(256, {.indirect = true});
  add_publish({rd(0, 8), DriverBuffer{kGpaEnd - 0x10, 0x20, true}});
  expect_rejected("descriptor 1: addr 0x2ffff0 len 0x20 is not inside guest memory");
  dev_.set_last_avail(1);
  add_publish({DriverBuffer{0x1000, 8, false}});
  expect_rejected("descriptor 2: addr 0x1000 len 0x8 is not inside guest memory");
  dev_.set_last_avail(2);
  // The indirect table itself, and an entry inside it.
  const uint16_t head = add_publish({rd(0, 8)}, true);
  drv_.desc_table()[head].addr = kGpaEnd;
  expect_rejected("descriptor 3: indirect table addr 0x300000 len 0x10 is not inside guest memory");
  dev_.set_last_avail(3);
  add_publish({rd(0, 8), DriverBuffer{kGpaEnd + 0x1000, 8, true}}, true);
  expect_rejected("descriptor 4 indirect entry 1: addr 0x301000 len 0x8 is not inside guest memory");
}

TEST_F(VirtQueueTest, RejectsAddressLenOverflow) {
  start(256);
  add_publish({DriverBuffer{0xfffffffffffff000, 0x2000, false}});
  expect_rejected("descriptor 0: addr 0xfffffffffffff000 + len 0x2000 wraps around 2^64");
}

TEST_F(VirtQueueTest, RejectsReadableAfterWritable) {
  start(256, {.indirect = true});
  add_publish({rd(0, 8), wr(0x100, 8), rd(0x200, 8)});
  expect_rejected("descriptor 2: device-readable descriptor follows a device-writable one");
  dev_.set_last_avail(1);
  add_publish({wr(0x100, 8), rd(0x200, 8)}, true);
  expect_rejected("descriptor 3 indirect entry 1: device-readable descriptor follows a device-writable one");
}

// ---- indirect descriptors ----

TEST_F(VirtQueueTest, RejectsIndirectNotNegotiated) {
  start(256);
  add_publish({rd(0, 8)}, true);
  expect_rejected("descriptor 0: INDIRECT flag set but VIRTIO_F_RING_INDIRECT_DESC was not negotiated");
}

TEST_F(VirtQueueTest, RejectsIndirectLenNotMultipleOf16) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8), wr(0x100, 8)}, true);
  drv_.desc_table()[head].len = 20;
  expect_rejected("descriptor 0: indirect table len 20 is not a multiple of 16");
}

TEST_F(VirtQueueTest, RejectsIndirectZeroLen) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8)}, true);
  drv_.desc_table()[head].len = 0;
  expect_rejected("descriptor 0: indirect table len 0");
}

TEST_F(VirtQueueTest, RejectsIndirectTableOver32768Entries) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8)}, true);
  drv_.desc_table()[head].len = (32768 + 1) * 16;
  expect_rejected("descriptor 0: indirect table len 524304 holds 32769 descriptors, more than 32768");
}

TEST_F(VirtQueueTest, RejectsNestedIndirect) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8), rd(0x100, 8)}, true);
  Desc* table = reinterpret_cast<Desc*>(host(drv_.desc_table()[head].addr));
  table[1].flags |= kDescFIndirect;
  expect_rejected("descriptor 0 indirect entry 1: INDIRECT flag inside an indirect table (nested indirect)");
}

TEST_F(VirtQueueTest, RejectsIndirectWithNext) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8)}, true);
  drv_.desc_table()[head].flags |= kDescFNext;
  drv_.desc_table()[head].next = 1;
  expect_rejected("descriptor 0: both INDIRECT and NEXT set (next 1)");
}

TEST_F(VirtQueueTest, RejectsIndirectNextOutOfRange) {
  start(256, {.indirect = true});
  const uint16_t head = add_publish({rd(0, 8), rd(0x100, 8)}, true);
  Desc* table = reinterpret_cast<Desc*>(host(drv_.desc_table()[head].addr));
  table[0].next = 2;
  expect_rejected("descriptor 0 indirect entry 0: next 2 >= indirect table entries 2");
}

TEST_F(VirtQueueTest, PopsIndirectChain) {
  start(256, {.indirect = true});
  add_publish({rd(0, 8)});
  const uint16_t head = add_publish({rd(0x100, 10), rd(0x200, 20), rd(0x300, 30), wr(0x400, 40), wr(0x500, 50)}, true);
  EXPECT_EQ(head, 1);
  EXPECT_EQ(drv_.num_free(), 254);  // one descriptor per indirect chain
  pop_one();
  Chain c = pop_one();
  EXPECT_EQ(c.head, head);
  ASSERT_EQ(c.segments.size(), 5u);
  EXPECT_EQ(c.readable_bytes, 60u);
  EXPECT_EQ(c.writable_bytes, 90u);
  EXPECT_EQ(c.segments[2].gpa, kBufGpa + 0x300);
  EXPECT_FALSE(c.segments[2].writable);
  EXPECT_TRUE(c.segments[3].writable);
  ASSERT_TRUE(dev_.push(0, 0).ok());
  ASSERT_TRUE(dev_.push(head, 90).ok());
  ASSERT_TRUE(drv_.pop_used().has_value());
  auto e = drv_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, head);
  EXPECT_EQ(e->len, 90u);
  EXPECT_EQ(drv_.num_free(), 256);
}

// "Zero or more normal chained descriptors followed by a single descriptor
// with INDIRECT" is a layout the device must handle.
TEST_F(VirtQueueTest, PopsDirectDescriptorsThenIndirectTable) {
  start(16, {.indirect = true});
  write_table(kTableGpa, {Desc{kBufGpa + 0x100, 16, kDescFNext, 1}, Desc{kBufGpa + 0x200, 32, kDescFWrite, 0}});
  Desc* d = drv_.desc_table();
  d[3] = Desc{kBufGpa, 4, kDescFNext, 7};
  // The WRITE flag on the descriptor naming a table must be ignored.
  d[7] = Desc{kTableGpa, 32, kDescFIndirect | kDescFWrite, 0};
  publish_head(3);
  Chain c = pop_one();
  EXPECT_EQ(c.head, 3);
  ASSERT_EQ(c.segments.size(), 3u);
  EXPECT_EQ(c.segments[0].gpa, kBufGpa);
  EXPECT_FALSE(c.segments[1].writable);
  EXPECT_TRUE(c.segments[2].writable);
  EXPECT_EQ(c.readable_bytes, 20u);
  EXPECT_EQ(c.writable_bytes, 32u);
}

TEST_F(VirtQueueTest, IndirectTableSpanningAdjacentRegions) {
  start(16, {.indirect = true});
  const uint64_t table = kGpa1 - 24;  // first entry and half of the second in region 0
  write_table(table, {Desc{kBufGpa, 8, kDescFNext, 1}, Desc{kBufGpa + 0x100, 8, kDescFWrite, 0}});
  drv_.desc_table()[0] = Desc{table, 32, kDescFIndirect, 0};
  publish_head(0);
  Chain c = pop_one();
  ASSERT_EQ(c.segments.size(), 2u);
  EXPECT_EQ(c.segments[1].gpa, kBufGpa + 0x100);
  EXPECT_TRUE(c.segments[1].writable);
}

TEST_F(VirtQueueTest, ZeroLengthDescriptorsAreRecorded) {
  start(16, {.indirect = true});
  // Address 0 is in no region, but nothing is ever read from it.
  add_publish({DriverBuffer{0, 0, false}, rd(0, 4), DriverBuffer{0, 0, true}});
  Chain c = pop_one();
  ASSERT_EQ(c.segments.size(), 3u);
  EXPECT_EQ(c.segments[0].len, 0u);
  EXPECT_EQ(c.segments[2].len, 0u);
  EXPECT_TRUE(c.segments[2].writable);
  EXPECT_EQ(c.readable_bytes, 4u);
  EXPECT_EQ(c.writable_bytes, 0u);
  std::vector<uint8_t> buf(16);
  auto n = read_chain(mem_, c, 0, buf);
  ASSERT_TRUE(n.ok()) << n.message();
  EXPECT_EQ(*n, 4u);
  auto w = write_chain(mem_, c, 0, buf);
  ASSERT_TRUE(w.ok()) << w.message();
  EXPECT_EQ(*w, 0u);
}

// ---- data ----

TEST_F(VirtQueueTest, ChainSpanningAdjacentRegions) {
  start(16);
  // One readable buffer straddling the region boundary, one writable.
  const uint64_t rgpa = kGpa1 - 0x800, wgpa = kGpa1 - 0x10;
  for (uint32_t i = 0; i < 0x1000; ++i) host(rgpa)[i] = static_cast<uint8_t>(i * 7);
  const uint16_t head = add_publish({DriverBuffer{rgpa, 0x1000, false}, DriverBuffer{wgpa, 0x20, true}});
  Chain c = pop_one();
  EXPECT_EQ(c.head, head);
  ASSERT_EQ(c.segments.size(), 2u);
  EXPECT_EQ(c.readable_bytes, 0x1000u);

  std::vector<uint8_t> in(0x1000);
  auto n = read_chain(mem_, c, 0, in);
  ASSERT_TRUE(n.ok()) << n.message();
  ASSERT_EQ(*n, 0x1000u);
  for (uint32_t i = 0; i < 0x1000; ++i) ASSERT_EQ(in[i], static_cast<uint8_t>(i * 7)) << i;

  std::vector<uint8_t> out(0x20);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(0xa0 + i);
  auto w = write_chain(mem_, c, 0, out);
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_EQ(*w, 0x20u);
  EXPECT_EQ(std::memcmp(host(wgpa), out.data(), out.size()), 0);
}

TEST_F(VirtQueueTest, ReadWriteChainWithOffsets) {
  start(16);
  for (uint32_t i = 0; i < 0x400; ++i) host(kBufGpa)[i] = static_cast<uint8_t>(i);
  // readable: [0x10, 0x1a) then [0x100, 0x114); writable: 8 bytes at 0x200, 16 at 0x300.
  add_publish({rd(0x10, 10), rd(0x100, 20), wr(0x200, 8), wr(0x300, 16)});
  Chain c = pop_one();

  std::vector<uint8_t> buf(100, 0xee);
  auto n = read_chain(mem_, c, 5, buf);
  ASSERT_TRUE(n.ok()) << n.message();
  ASSERT_EQ(*n, 25u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(buf[i], static_cast<uint8_t>(0x15 + i)) << i;
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(buf[5 + i], static_cast<uint8_t>(0x100 + i)) << i;
  EXPECT_EQ(buf[25], 0xee);  // nothing past the readable part

  std::vector<uint8_t> four(4);
  n = read_chain(mem_, c, 12, four);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 4u);
  EXPECT_EQ(four, (std::vector<uint8_t>{0x02, 0x03, 0x04, 0x05}));
  n = read_chain(mem_, c, 30, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = read_chain(mem_, c, 1000, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);

  std::memset(host(kBufGpa + 0x200), 0, 0x200);
  const std::vector<uint8_t> ten{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto w = write_chain(mem_, c, 6, ten);
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_EQ(*w, 10u);
  EXPECT_EQ(host(kBufGpa + 0x200)[5], 0);
  EXPECT_EQ(host(kBufGpa + 0x200)[6], 1);
  EXPECT_EQ(host(kBufGpa + 0x200)[7], 2);
  EXPECT_EQ(host(kBufGpa + 0x300)[0], 3);
  EXPECT_EQ(host(kBufGpa + 0x300)[7], 10);
  EXPECT_EQ(host(kBufGpa + 0x300)[8], 0);
  // More than the writable part: truncated to what fits.
  const std::vector<uint8_t> big(100, 0x55);
  w = write_chain(mem_, c, 0, big);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 24u);
  EXPECT_EQ(host(kBufGpa + 0x300)[15], 0x55);
  EXPECT_EQ(host(kBufGpa + 0x300)[16], 0);
  // The readable part was never written.
  EXPECT_EQ(host(kBufGpa)[0x10], 0x10);
}

TEST_F(VirtQueueTest, ReadChainFailsWhenMemoryGoesAway) {
  start(16);
  add_publish({DriverBuffer{kGpa1 + 0x100, 16, false}});
  Chain c = pop_one();
  ASSERT_TRUE(mem_.remove_region(MemoryRegion{kGpa1, kRegionSize, kUva1, kRegionSize}).ok());
  std::vector<uint8_t> buf(16);
  auto n = read_chain(mem_, c, 0, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(has(n.message(), "segment 0 (gpa 0x200100 len 0x10)")) << n.message();
}

// Many chains of varied shape through a small queue, so both 16-bit
// indices wrap around (more than 65536 chains) and descriptors are reused in
// every order; every byte is checked in both directions.
TEST_F(VirtQueueTest, RoundTripWithIndexWraparound) {
  constexpr uint32_t kSize = 16;
  start(kSize, {.indirect = true});
  constexpr uint32_t kChains = 70000;
  constexpr uint64_t kSlot = 0x400;  // buffer space per outstanding chain
  uint32_t sent = 0, done = 0;
  uint32_t popped = 0;
  std::vector<uint16_t> heads;
  while (done < kChains) {
    // Post a batch of 1..kSize chains, as many as descriptors allow.
    const uint32_t batch = 1 + (sent * 7) % kSize;
    const uint16_t old_avail = drv_.avail_idx();
    for (uint32_t b = 0; b < batch && sent < kChains; ++b) {
      const uint32_t s = sent;
      const uint64_t base = (s % 32) * kSlot;
      const uint32_t nr = 1 + s % 2, nw = 1 + (s / 2) % 2;
      const bool indirect = s % 3 == 0;
      const uint32_t needed = indirect ? 1 : nr + nw;
      if (drv_.num_free() < needed) break;
      std::vector<DriverBuffer> bufs;
      for (uint32_t i = 0; i < nr; ++i) {
        const uint32_t len = 8 + (s + i) % 40;
        for (uint32_t k = 0; k < len; ++k) host(kBufGpa + base + i * 0x80)[k] = static_cast<uint8_t>(s + k);
        bufs.push_back(rd(base + i * 0x80, len));
      }
      for (uint32_t i = 0; i < nw; ++i) bufs.push_back(wr(base + 0x200 + i * 0x80, 16));
      auto h = drv_.add(bufs, indirect);
      ASSERT_TRUE(h.ok()) << h.message();
      heads.push_back(*h);
      ++sent;
    }
    drv_.publish();
    ASSERT_EQ(static_cast<uint16_t>(drv_.avail_idx() - old_avail), *dev_.pending());

    // The device echoes the first 16 readable bytes, xored, into the writable part.
    for (;;) {
      auto r = dev_.pop();
      ASSERT_TRUE(r.ok()) << r.message();
      if (!r->has_value()) break;
      const Chain& c = **r;
      const uint32_t s = popped++;
      ASSERT_EQ(c.head, heads[s]) << "chain " << s;
      const uint32_t nr = 1 + s % 2, nw = 1 + (s / 2) % 2;
      ASSERT_EQ(c.segments.size(), nr + nw) << "chain " << s;
      ASSERT_EQ(c.writable_bytes, 16 * nw) << "chain " << s;
      std::vector<uint8_t> in(c.readable_bytes);
      auto n = read_chain(mem_, c, 0, in);
      ASSERT_TRUE(n.ok()) << n.message();
      ASSERT_EQ(*n, c.readable_bytes);
      size_t at = 0;
      for (uint32_t i = 0; i < nr; ++i) {
        const uint32_t len = 8 + (s + i) % 40;
        for (uint32_t k = 0; k < len; ++k, ++at) ASSERT_EQ(in[at], static_cast<uint8_t>(s + k)) << "chain " << s;
      }
      ASSERT_EQ(at, in.size());
      std::vector<uint8_t> out(16);
      for (size_t k = 0; k < out.size(); ++k) out[k] = static_cast<uint8_t>(in[k % in.size()] ^ 0x5a);
      auto w = write_chain(mem_, c, c.writable_bytes - 16, out);
      ASSERT_TRUE(w.ok()) << w.message();
      ASSERT_EQ(*w, 16u);
      ASSERT_TRUE(dev_.push(c.head, static_cast<uint32_t>(c.writable_bytes)).ok());
    }
    EXPECT_EQ(dev_.last_avail(), drv_.avail_idx());
    EXPECT_EQ(dev_.used_idx(), drv_.device_used_idx());

    while (auto e = drv_.pop_used()) {
      const uint32_t s = done;
      ASSERT_EQ(e->id, heads[s]) << "chain " << s;
      const uint32_t nw = 1 + (s / 2) % 2;
      ASSERT_EQ(e->len, 16 * nw) << "chain " << s;
      const uint8_t* reply = host(kBufGpa + (s % 32) * kSlot + 0x200 + (nw - 1) * 0x80);
      ASSERT_EQ(reply[0], static_cast<uint8_t>(s ^ 0x5a)) << "chain " << s;
      ++done;
    }
    ASSERT_EQ(drv_.num_free(), kSize);
  }
  EXPECT_EQ(dev_.last_avail(), static_cast<uint16_t>(kChains));
  EXPECT_EQ(drv_.last_used(), static_cast<uint16_t>(kChains));
}

TEST_F(VirtQueueTest, SetLastAvailResumesMidRing) {
  start(16);
  for (uint32_t i = 0; i < 5; ++i) add({rd(i * 0x10, 8)});
  drv_.publish();
  dev_.set_last_avail(3);
  EXPECT_EQ(dev_.used_idx(), 3);
  EXPECT_EQ(*dev_.pending(), 2);
  EXPECT_EQ(pop_one().head, 3);
  EXPECT_EQ(pop_one().head, 4);
  ASSERT_TRUE(dev_.push(4, 0).ok());
  EXPECT_EQ(drv_.device_used_idx(), 4);
}

// ---- notification suppression ----

TEST_F(VirtQueueTest, EventIdxSuppressesInterrupts) {
  start(16, {.event_idx = true});
  for (uint32_t i = 0; i < 10; ++i) add({wr(i * 0x10, 8)});
  drv_.publish();
  std::vector<uint16_t> heads;
  for (uint32_t i = 0; i < 10; ++i) heads.push_back(pop_one().head);

  drv_.set_used_event(3);
  // The lower bit of flags means nothing with EVENT_IDX.
  drv_.set_no_interrupt(true);
  auto push = [&](size_t i) { ASSERT_TRUE(dev_.push(heads[i], 8).ok()); };
  push(0);
  EXPECT_TRUE(dev_.should_notify());  // nothing signalled yet: notify
  push(1);
  EXPECT_FALSE(dev_.should_notify());  // used idx 2
  push(2);
  EXPECT_FALSE(dev_.should_notify());  // used idx 3
  push(3);
  EXPECT_TRUE(dev_.should_notify());  // used idx 4: wrote entry 3 == used_event
  push(4);
  EXPECT_FALSE(dev_.should_notify());
  EXPECT_FALSE(dev_.should_notify());  // nothing new

  // A batch that jumps over used_event still notifies, once.
  drv_.set_used_event(6);
  push(5);
  push(6);
  push(7);
  EXPECT_TRUE(dev_.should_notify());  // 5 -> 8 crosses 6
  EXPECT_FALSE(dev_.should_notify());
  drv_.set_used_event(static_cast<uint16_t>(8 + 100));
  push(8);
  push(9);
  EXPECT_FALSE(dev_.should_notify());
}

TEST_F(VirtQueueTest, EventIdxSuppressesKicks) {
  start(16, {.event_idx = true});
  dev_.enable_notifications(true);  // avail_event = 0
  uint16_t old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_TRUE(drv_.needs_kick(old));
  old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_FALSE(drv_.needs_kick(old));  // the device has not caught up with entry 0 yet

  pop_one();
  pop_one();
  dev_.enable_notifications(true);  // avail_event = 2
  old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_TRUE(drv_.needs_kick(old));

  pop_one();
  dev_.enable_notifications(false);
  old = drv_.avail_idx();
  for (uint32_t i = 0; i < 5; ++i) add({rd(0, 8)});
  drv_.publish();
  EXPECT_FALSE(drv_.needs_kick(old));
  // The device never sets used flags with EVENT_IDX.
  uint16_t used_flags = 0;
  std::memcpy(&used_flags, host(drv_.used_gpa()), 2);
  EXPECT_EQ(used_flags, 0);
}

TEST_F(VirtQueueTest, NoInterruptWithoutEventIdx) {
  start(16);
  add_publish({wr(0, 8)});
  add_publish({wr(0x10, 8)});
  const uint16_t a = pop_one().head, b = pop_one().head;
  drv_.set_used_event(100);  // ignored without EVENT_IDX
  ASSERT_TRUE(dev_.push(a, 8).ok());
  EXPECT_TRUE(dev_.should_notify());
  EXPECT_TRUE(dev_.should_notify());  // flags only: no memory of past notifications
  drv_.set_no_interrupt(true);
  ASSERT_TRUE(dev_.push(b, 8).ok());
  EXPECT_FALSE(dev_.should_notify());
  drv_.set_no_interrupt(false);
  EXPECT_TRUE(dev_.should_notify());
}

TEST_F(VirtQueueTest, NoNotifyWithoutEventIdx) {
  start(16);
  uint16_t old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_TRUE(drv_.needs_kick(old));
  dev_.enable_notifications(false);
  old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_FALSE(drv_.needs_kick(old));
  dev_.enable_notifications(true);
  old = drv_.avail_idx();
  add_publish({rd(0, 8)});
  EXPECT_TRUE(drv_.needs_kick(old));
  // avail_event is not touched without EVENT_IDX.
  uint16_t avail_event = 0xffff;
  std::memcpy(&avail_event, host(drv_.used_gpa() + 4 + 8 * 16), 2);
  EXPECT_EQ(avail_event, 0);
}

// Dirty-page logging: push() marks the bytes it reports written, in the
// chain's writable buffers by guest-physical address, and the used ring at
// log_guest_addr, which need not be the ring's own address.
TEST_F(VirtQueueTest, PushMarksWrittenBuffersAndTheUsedRingInTheLog) {
  start(8);
  auto log = DirtyLog::create(DirtyLog::bytes_for(kGpaEnd + 0x100000));
  ASSERT_TRUE(log.ok()) << log.message();
  const uint64_t used_log = kGpaEnd + 0x10000;
  dev_.set_logging({&*log, true, used_log});
  add_publish({rd(0, 16), wr(0x3000, 0x800), wr(0x5000, 0x2000)});
  Chain c = pop_one();
  ASSERT_TRUE(dev_.push(c.head, 0x900).ok());
  EXPECT_FALSE(log->marked(kBufGpa));           // device-readable only
  EXPECT_TRUE(log->marked(kBufGpa + 0x3000));
  EXPECT_TRUE(log->marked(kBufGpa + 0x5000));   // the 0x100 bytes past the first piece
  EXPECT_FALSE(log->marked(kBufGpa + 0x6000));  // beyond the written length
  EXPECT_TRUE(log->marked(used_log));
  EXPECT_FALSE(log->marked(drv_.used_gpa()));

  // The device may mark its buffers itself; the used ring is still marked.
  log->clear();
  dev_.set_logging({&*log, false, used_log});
  add_publish({wr(0x3000, 0x800)});
  c = pop_one();
  ASSERT_TRUE(dev_.push(c.head, 0x800).ok());
  EXPECT_FALSE(log->marked(kBufGpa + 0x3000));
  EXPECT_TRUE(log->marked(used_log));

  // Logging off: nothing is marked.
  log->clear();
  dev_.set_logging({});
  add_publish({wr(0x3000, 0x800)});
  c = pop_one();
  ASSERT_TRUE(dev_.push(c.head, 0x800).ok());
  dev_.enable_notifications(true);
  EXPECT_FALSE(log->marked(kBufGpa + 0x3000));
  EXPECT_FALSE(log->marked(used_log));
}

}  // namespace
}  // namespace vhu
