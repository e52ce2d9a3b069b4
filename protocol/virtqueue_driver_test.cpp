#include "vhu/virtqueue_driver.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace vhu {
namespace {

using vring::Desc;
using vring::kDescFIndirect;
using vring::kDescFNext;
using vring::kDescFWrite;

constexpr uint64_t kGpa = 0x40000;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

// The driver side needs no GuestMemory: the test plays the device by reading
// and writing the rings directly.
class DriverQueueTest : public ::testing::Test {
 protected:
  void make(uint32_t size, bool event_idx = false) {
    bytes_ = DriverQueue::area_bytes(size);
    const size_t alloc = (bytes_ + 4095) / 4096 * 4096;
    area_.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, alloc)));
    ASSERT_NE(area_, nullptr);
    std::memset(area_.get(), 0xff, alloc);  // init() must clear it
    auto r = q_.init(area_.get(), kGpa, size, event_idx);
    ASSERT_TRUE(r.ok()) << r.message();
  }
  uint8_t* at(uint64_t gpa) { return area_.get() + (gpa - kGpa); }
  uint16_t u16(uint64_t gpa) {
    uint16_t v;
    std::memcpy(&v, at(gpa), 2);
    return v;
  }
  void put16(uint64_t gpa, uint16_t v) { std::memcpy(at(gpa), &v, 2); }
  // The device's half: one used element, then the index.
  void device_push(uint16_t used_idx, uint32_t id, uint32_t len) {
    const vring::UsedElem e{id, len};
    std::memcpy(at(q_.used_gpa() + 4 + 8ull * (used_idx % q_.size())), &e, sizeof e);
    put16(q_.used_gpa() + 2, static_cast<uint16_t>(used_idx + 1));
  }

  std::unique_ptr<uint8_t, FreeDeleter> area_;
  uint64_t bytes_ = 0;
  DriverQueue q_;
};

TEST_F(DriverQueueTest, LayoutIsAlignedAndInsideArea) {
  for (uint32_t size : {1u, 2u, 4u, 64u, 256u, 1024u}) {
    SCOPED_TRACE(size);
    make(size);
    EXPECT_EQ(q_.size(), size);
    EXPECT_EQ(q_.desc_gpa(), kGpa);
    EXPECT_EQ(q_.avail_gpa(), kGpa + vring::desc_table_bytes(size));
    EXPECT_EQ(q_.avail_gpa() % vring::kAvailAlign, 0u);
    EXPECT_EQ(q_.used_gpa() % vring::kUsedAlign, 0u);
    EXPECT_GE(q_.used_gpa(), q_.avail_gpa() + vring::avail_ring_bytes(size));
    // The rings sit at the minimum alignment, not padded out to a page.
    EXPECT_LT(q_.used_gpa(), q_.avail_gpa() + vring::avail_ring_bytes(size) + vring::kUsedAlign);
    for (uint64_t i = 0; i < bytes_; ++i) ASSERT_EQ(area_.get()[i], 0) << "byte " << i;
    EXPECT_EQ(q_.num_free(), size);
    // The indirect pool follows the used ring and ends inside the area.
    std::vector<DriverBuffer> bufs(DriverQueue::kMaxIndirect, DriverBuffer{0x1000, 4, false});
    for (uint32_t i = 0; i < size; ++i) {
      auto h = q_.add(bufs, true);
      ASSERT_TRUE(h.ok()) << h.message();
      const Desc d = q_.desc_table()[*h];
      EXPECT_EQ(d.addr % 16, 0u);
      EXPECT_GE(d.addr, q_.used_gpa() + vring::used_ring_bytes(size));
      EXPECT_LE(d.addr + d.len, kGpa + bytes_);
    }
    EXPECT_EQ(q_.num_free(), 0);
  }
  // The largest queue: its pool is what makes the area big.
  EXPECT_GE(DriverQueue::area_bytes(32768), 32768ull * DriverQueue::kMaxIndirect * 16);
  EXPECT_LT(DriverQueue::area_bytes(32768), 32768ull * (DriverQueue::kMaxIndirect + 2) * 16);
}

TEST_F(DriverQueueTest, InitRejectsBadArguments) {
  make(16);
  DriverQueue q;
  for (uint32_t size : {0u, 3u, 65536u}) {
    auto r = q.init(area_.get(), kGpa, size, false);
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_NE(r.message().find(fmt::format("queue size {}", size)), std::string::npos) << r.message();
  }
  auto r = q.init(area_.get(), kGpa + 8, 16, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("gpa 0x40008 is not 16-byte aligned"), std::string::npos) << r.message();
  EXPECT_FALSE(q.init(area_.get() + 4, kGpa, 16, false).ok());
  EXPECT_FALSE(q.init(nullptr, kGpa, 16, false).ok());
  EXPECT_FALSE(q.init(area_.get(), UINT64_MAX - 0xff, 16, false).ok());
}

TEST_F(DriverQueueTest, UninitialisedQueueIsInert) {
  DriverQueue q;
  const DriverBuffer b{0x1000, 4, false};
  EXPECT_FALSE(q.add({&b, 1}).ok());
  EXPECT_FALSE(q.pop_used().has_value());
  EXPECT_FALSE(q.needs_kick(0));
  q.publish();
  q.set_used_event(1);
  q.set_no_interrupt(true);
  q.set_avail_idx_raw(3);
  EXPECT_EQ(q.avail_ring(), nullptr);
}

TEST_F(DriverQueueTest, AddLinksDescriptorsAndPublishes) {
  make(8);
  const std::vector<DriverBuffer> bufs{{0x1000, 10, false}, {0x2000, 20, false}, {0x3000, 30, true}};
  auto h = q_.add(bufs);
  ASSERT_TRUE(h.ok()) << h.message();
  EXPECT_EQ(*h, 0);
  EXPECT_EQ(q_.num_free(), 5);
  const Desc* d = q_.desc_table();
  EXPECT_EQ(d[0].addr, 0x1000u);
  EXPECT_EQ(d[0].len, 10u);
  EXPECT_EQ(d[0].flags, kDescFNext);
  EXPECT_EQ(d[0].next, 1);
  EXPECT_EQ(d[1].flags, kDescFNext);
  EXPECT_EQ(d[1].next, 2);
  EXPECT_EQ(d[2].flags, kDescFWrite);
  EXPECT_EQ(d[2].len, 30u);
  EXPECT_EQ(q_.avail_ring()[0], 0);
  // Not visible before publish().
  EXPECT_EQ(q_.avail_idx(), 1);
  EXPECT_EQ(u16(q_.avail_gpa() + 2), 0);
  q_.publish();
  EXPECT_EQ(u16(q_.avail_gpa() + 2), 1);

  h = q_.add(std::vector<DriverBuffer>{{0x4000, 4, true}});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, 3);
  EXPECT_EQ(q_.desc_table()[3].flags, kDescFWrite);
  EXPECT_EQ(q_.avail_ring()[1], 3);
}

TEST_F(DriverQueueTest, AddRejectsEmptyAndExhaustion) {
  make(4);
  auto r = q_.add(std::vector<DriverBuffer>{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("at least one buffer"), std::string::npos) << r.message();
  const std::vector<DriverBuffer> three(3, DriverBuffer{0x1000, 4, false});
  ASSERT_TRUE(q_.add(three).ok());
  r = q_.add(three);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("3 descriptors needed, 1 free"), std::string::npos) << r.message();
  EXPECT_EQ(q_.num_free(), 1);
  EXPECT_EQ(q_.avail_idx(), 1);
  // An indirect chain still fits in the last descriptor.
  EXPECT_TRUE(q_.add(three, true).ok());
  EXPECT_FALSE(q_.add(three, true).ok());
}

TEST_F(DriverQueueTest, IndirectAddUsesOneDescriptor) {
  make(4);
  // More buffers than the queue has descriptors: legal to build, so that
  // negative tests can offer it to a device.
  std::vector<DriverBuffer> bufs;
  for (uint32_t i = 0; i < 9; ++i) bufs.push_back({0x1000 + 0x100 * i, 16 + i, i >= 6});
  auto h = q_.add(bufs, true);
  ASSERT_TRUE(h.ok()) << h.message();
  EXPECT_EQ(q_.num_free(), 3);
  const Desc head = q_.desc_table()[*h];
  EXPECT_EQ(head.flags, kDescFIndirect);
  EXPECT_EQ(head.len, 9u * 16);
  std::vector<Desc> table(9);
  std::memcpy(table.data(), at(head.addr), 9 * sizeof(Desc));
  for (uint16_t i = 0; i < 9; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(table[i].addr, 0x1000u + 0x100 * i);
    EXPECT_EQ(table[i].len, 16u + i);
    const uint16_t want = static_cast<uint16_t>((i >= 6 ? kDescFWrite : 0) | (i < 8 ? kDescFNext : 0));
    EXPECT_EQ(table[i].flags, want);
    if (i < 8) {
      EXPECT_EQ(table[i].next, i + 1);
    }
  }
  std::vector<DriverBuffer> too_many(DriverQueue::kMaxIndirect + 1, DriverBuffer{0x1000, 4, false});
  auto r = q_.add(too_many, true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("17 buffers exceed the 16 of an indirect table"), std::string::npos) << r.message();
  // Each head owns its own table.
  auto h2 = q_.add(bufs, true);
  ASSERT_TRUE(h2.ok());
  EXPECT_NE(q_.desc_table()[*h2].addr, head.addr);
}

TEST_F(DriverQueueTest, PopUsedFreesDescriptors) {
  make(8);
  const std::vector<DriverBuffer> two{{0x1000, 4, false}, {0x2000, 8, true}};
  const uint16_t a = *q_.add(two);
  const uint16_t b = *q_.add(two, true);
  const uint16_t c = *q_.add(two);
  q_.publish();
  EXPECT_EQ(q_.num_free(), 3);
  EXPECT_FALSE(q_.pop_used().has_value());

  // Completed out of order.
  device_push(0, b, 8);
  device_push(1, a, 3);
  EXPECT_EQ(q_.device_used_idx(), 2);
  auto e = q_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, b);
  EXPECT_EQ(e->len, 8u);
  EXPECT_EQ(q_.num_free(), 4);
  e = q_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, a);
  EXPECT_EQ(e->len, 3u);
  EXPECT_EQ(q_.num_free(), 6);
  EXPECT_FALSE(q_.pop_used().has_value());
  EXPECT_EQ(q_.last_used(), 2);
  device_push(2, c, 0);
  ASSERT_TRUE(q_.pop_used().has_value());
  EXPECT_EQ(q_.num_free(), 8);

  // Every descriptor is usable again.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q_.add(two).ok());
  EXPECT_EQ(q_.num_free(), 0);
}

TEST_F(DriverQueueTest, PopUsedReturnsBogusIdsWithoutFreeing) {
  make(8);
  const std::vector<DriverBuffer> two{{0x1000, 4, false}, {0x2000, 8, true}};
  const uint16_t a = *q_.add(two);
  q_.publish();
  device_push(0, 999, 1);  // out of range
  device_push(1, 5, 2);    // in range, but not an outstanding head
  device_push(2, a, 3);
  device_push(3, a, 4);  // the same head twice
  auto e = q_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, 999u);
  e = q_.pop_used();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->id, 5u);
  EXPECT_EQ(q_.num_free(), 6);
  ASSERT_TRUE(q_.pop_used().has_value());
  EXPECT_EQ(q_.num_free(), 8);
  ASSERT_TRUE(q_.pop_used().has_value());
  EXPECT_EQ(q_.num_free(), 8);
}

TEST_F(DriverQueueTest, NeedsKickFollowsNoNotifyFlag) {
  make(8);
  const std::vector<DriverBuffer> one{{0x1000, 4, false}};
  uint16_t old = q_.avail_idx();
  ASSERT_TRUE(q_.add(one).ok());
  q_.publish();
  EXPECT_TRUE(q_.needs_kick(old));
  put16(q_.used_gpa(), vring::kUsedFNoNotify);
  EXPECT_FALSE(q_.needs_kick(old));
  // avail_event means nothing without EVENT_IDX.
  put16(q_.used_gpa(), 0);
  put16(q_.used_gpa() + 4 + 8 * 8, 100);
  EXPECT_TRUE(q_.needs_kick(old));
}

TEST_F(DriverQueueTest, NeedsKickFollowsAvailEvent) {
  make(8, true);
  const std::vector<DriverBuffer> one{{0x1000, 4, false}};
  const uint64_t avail_event = q_.used_gpa() + 4 + 8 * 8;
  put16(q_.used_gpa(), vring::kUsedFNoNotify);  // ignored with EVENT_IDX
  put16(avail_event, 2);
  uint16_t old = q_.avail_idx();
  ASSERT_TRUE(q_.add(one).ok());
  ASSERT_TRUE(q_.add(one).ok());
  q_.publish();
  EXPECT_FALSE(q_.needs_kick(old));  // 0 -> 2 did not write entry 2
  old = q_.avail_idx();
  ASSERT_TRUE(q_.add(one).ok());
  q_.publish();
  EXPECT_TRUE(q_.needs_kick(old));  // 2 -> 3 wrote entry 2
}

TEST_F(DriverQueueTest, SuppressionFieldsLiveInTheAvailRing) {
  make(16, true);
  q_.set_used_event(0x1234);
  EXPECT_EQ(u16(q_.avail_gpa() + 4 + 2 * 16), 0x1234);
  EXPECT_EQ(u16(q_.avail_gpa()), 0);
  q_.set_no_interrupt(true);
  EXPECT_EQ(u16(q_.avail_gpa()), vring::kAvailFNoInterrupt);
  q_.set_no_interrupt(false);
  EXPECT_EQ(u16(q_.avail_gpa()), 0);
}

TEST_F(DriverQueueTest, RawAccessorsReachTheRing) {
  make(16);
  q_.set_avail_idx_raw(700);
  EXPECT_EQ(u16(q_.avail_gpa() + 2), 700);
  EXPECT_EQ(q_.avail_idx(), 700);
  q_.avail_ring()[3] = 99;
  EXPECT_EQ(u16(q_.avail_gpa() + 4 + 2 * 3), 99);
  q_.desc_table()[5].next = 4096;
  Desc d;
  std::memcpy(&d, at(q_.desc_gpa() + 5 * 16), sizeof d);
  EXPECT_EQ(d.next, 4096);
  // A later add and publish continue from the raw index.
  ASSERT_TRUE(q_.add(std::vector<DriverBuffer>{{0x1000, 4, false}}).ok());
  q_.publish();
  EXPECT_EQ(u16(q_.avail_gpa() + 2), 701);
  EXPECT_EQ(u16(q_.avail_gpa() + 4 + 2 * (700 % 16)), 0);
}

}  // namespace
}  // namespace vhu
