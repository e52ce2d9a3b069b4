#include "vhu/dirty_log.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace vhu {
namespace {

TEST(DirtyLog, BytesForCoverWholeWordsOfPages) {
  EXPECT_EQ(DirtyLog::bytes_for(0), 0u);
  EXPECT_EQ(DirtyLog::bytes_for(1), 8u);                     // one page, one u64
  EXPECT_EQ(DirtyLog::bytes_for(64 * DirtyLog::kPageSize), 8u);
  EXPECT_EQ(DirtyLog::bytes_for(64 * DirtyLog::kPageSize + 1), 16u);
  // QEMU's 512 MiB guest of the traces: mmap_size=0x4000.
  EXPECT_EQ(DirtyLog::bytes_for(512ull << 20), 0x4000u);
}

TEST(DirtyLog, MarksEveryPageARangeTouchesAndNothingElse) {
  auto log = DirtyLog::create(16);
  ASSERT_TRUE(log.ok()) << log.message();
  EXPECT_EQ(log->covered(), 128 * DirtyLog::kPageSize);
  EXPECT_TRUE(log->mark(0x1fff, 2));  // the last byte of page 1 and the first of page 2
  EXPECT_FALSE(log->marked(0x0));
  EXPECT_TRUE(log->marked(0x1000));
  EXPECT_TRUE(log->marked(0x2fff));
  EXPECT_FALSE(log->marked(0x3000));
  // The bit layout the spec gives: log[page / 8] |= 1 << page % 8.
  void* m = mmap(nullptr, 16, PROT_READ, MAP_SHARED, log->fd().get(), 0);
  ASSERT_NE(m, MAP_FAILED);
  EXPECT_EQ(static_cast<const uint8_t*>(m)[0], 0x06);
  munmap(m, 16);
  log->clear();
  EXPECT_FALSE(log->marked(0x1000));
}

TEST(DirtyLog, RangesBeyondTheLogAreReportedNotWritten) {
  auto log = DirtyLog::create(8);
  ASSERT_TRUE(log.ok());
  EXPECT_FALSE(log->mark(log->covered() - 1, 2));  // its last page, and one past it
  EXPECT_TRUE(log->marked(log->covered() - 1));
  EXPECT_FALSE(log->marked(log->covered()));
  EXPECT_FALSE(log->mark(~0ull - 10, 100));  // wraps: nothing inside, no crash
}

TEST(DirtyLog, MapRefusesWhatTheFileDoesNotHold) {
  auto log = DirtyLog::create(4096);
  ASSERT_TRUE(log.ok());
  EXPECT_FALSE(DirtyLog::map(log->fd(), 0, 0).ok());
  EXPECT_FALSE(DirtyLog::map(log->fd(), 4097, 0).ok());   // touching it would SIGBUS
  EXPECT_FALSE(DirtyLog::map(log->fd(), 16, 4090).ok());
  EXPECT_FALSE(DirtyLog::map(log->fd(), 16, ~0ull - 8).ok());  // wraps
  EXPECT_FALSE(DirtyLog::map(UniqueFd{}, 16, 0).ok());
  // An offset that is not page-aligned is the log's start all the same.
  auto at = DirtyLog::map(log->fd(), 16, 24);
  ASSERT_TRUE(at.ok()) << at.message();
  at->mark(0, 1);
  EXPECT_FALSE(log->marked(0));
  EXPECT_TRUE(log->marked(24 * 8 * DirtyLog::kPageSize));
}

TEST(DirtyLog, CreatedAtAnOffsetTheFileHoldsTheLogThere) {
  auto log = DirtyLog::create(16, 4096);
  ASSERT_TRUE(log.ok()) << log.message();
  EXPECT_EQ(log->offset(), 4096u);
  EXPECT_EQ(log->size(), 16u);
  // A back-end mapping what SET_LOG_BASE says shares its bits...
  auto peer = DirtyLog::map(log->fd(), log->size(), log->offset());
  ASSERT_TRUE(peer.ok()) << peer.message();
  peer->mark(0x3000, 1);
  EXPECT_TRUE(log->marked(0x3000));
  // ...and one that ignores the offset marks bytes before the log.
  auto wrong = DirtyLog::map(log->fd(), log->size(), 0);
  ASSERT_TRUE(wrong.ok());
  wrong->mark(0x5000, 1);
  EXPECT_FALSE(log->marked(0x5000));
  EXPECT_FALSE(DirtyLog::create(16, ~0ull - 8).ok());
}

}  // namespace
}  // namespace vhu
