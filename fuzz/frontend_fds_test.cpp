// The harness's fd pools and leak check: an input must see fresh fds (zeroed
// files, drained counters, no two alike) whatever the input before it did, and
// a leaked fd must stop the target, also when the leak check reuses what the
// last input left open.
#include "frontend_fds.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <utility>
#include <vector>

namespace vhu::fuzz {
namespace {

ino_t inode(int fd) {
  struct stat st{};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

TEST(FdPool, MemoryFileIsZeroedAndSizedForEachInput) {
  new_input();
  {
    UniqueFd fd = memfds().take(uint64_t{8192});
    const char junk[] = "left by the last input";
    ASSERT_EQ(::pwrite(fd.get(), junk, sizeof junk, 4096), static_cast<ssize_t>(sizeof junk));
  }
  new_input();
  UniqueFd fd = memfds().take(uint64_t{4100});
  struct stat st{};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 4100);
  char back[sizeof "left by the last input"] = {1};
  ASSERT_EQ(::pread(fd.get(), back, sizeof back, 4096), 4);
  EXPECT_EQ(std::string(back, 4), std::string(4, '\0'));
}

TEST(FdPool, FileWrittenThroughItsOffsetStartsAtZeroAgain) {
  new_input();
  {
    UniqueFd fd = memfds().take(uint64_t{0});
    const uint64_t one = 1;  // what a back-end writes to a call fd
    ASSERT_EQ(::write(fd.get(), &one, sizeof one), 8);
  }
  new_input();
  UniqueFd fd = memfds().take(uint64_t{0});
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 0);
}

TEST(FdPool, EventfdCountIsWhatTheInputAsksFor) {
  new_input();
  {
    UniqueFd fd = eventfds().take(true);
    const uint64_t more = 5;
    ASSERT_EQ(::write(fd.get(), &more, sizeof more), 8);
  }
  new_input();
  UniqueFd quiet = eventfds().take(false);
  uint64_t v = 0;
  EXPECT_EQ(::read(quiet.get(), &v, sizeof v), -1) << "count " << v << " crossed from the last input";
  UniqueFd signalled = eventfds().take(true);
  ASSERT_EQ(::read(signalled.get(), &v, sizeof v), 8);
  EXPECT_EQ(v, 1u);
}

TEST(FdPool, NoTwoFdsOfOneInputShareAFileEvenPastThePool) {
  new_input();
  std::vector<UniqueFd> fds;
  std::set<ino_t> files;
  for (size_t i = 0; i < MemfdKind::kPoolSize + 3; ++i) {
    fds.push_back(memfds().take(uint64_t{1}));
    files.insert(inode(fds.back().get()));
  }
  EXPECT_EQ(files.size(), fds.size());
}

TEST(FdPool, HungUpPipeReadsEndOfFileForEveryInput) {
  for (int input = 0; input < 2; ++input) {
    new_input();
    UniqueFd a = hung_up_pipes().take(nullptr);
    UniqueFd b = hung_up_pipes().take(nullptr);
    EXPECT_NE(inode(a.get()), inode(b.get()));
    char c;
    EXPECT_EQ(::read(a.get(), &c, 1), 0);
    EXPECT_EQ(::read(b.get(), &c, 1), 0);
  }
}

// What the front-end keeps of a file it handed over is that file, from the
// pool or past it, and lives on after the back-end closes its fd.
TEST(FdPool, KeptFdReachesTheFileHandedOver) {
  new_input();
  std::vector<std::pair<UniqueFd, KeptFd>> taken;
  for (size_t i = 0; i < EventfdKind::kPoolSize + 2; ++i) taken.push_back(eventfds().take_kept(false));
  for (auto& [given, kept] : taken) {
    ASSERT_EQ(inode(given.get()), inode(kept.get()));
    given.reset();
    const uint64_t one = 1;
    EXPECT_EQ(::write(kept.get(), &one, sizeof one), 8);
  }
}

void leak_in_second_input() {
  for (int input = 0; input < 2; ++input) {
    const FdLeakCheck check;
    {
      UniqueFd fd = eventfds().take(false);
      if (input == 1) (void)fd.release();
    }
    check.verify();
    if (input == 0) std::fprintf(stderr, "first input clean\n");
  }
}

TEST(FdLeakCheckDeathTest, LeakIsFoundAfterACleanInput) {
  new_input();
  EXPECT_DEATH(leak_in_second_input(), "first input clean\n.*left open");
}

TEST(FdLeakCheckDeathTest, LeakAboveAFdClosedInTheSameInputIsFound) {
  new_input();
  EXPECT_DEATH(
      {
        const FdLeakCheck check;
        UniqueFd low = eventfds().take(false);
        UniqueFd high = eventfds().take(false);
        low.reset();
        (void)high.release();
        check.verify();
      },
      "left open");
}

TEST(FdLeakCheck, InputsThatCloseEverythingPass) {
  for (int input = 0; input < 3; ++input) {
    new_input();
    const FdLeakCheck check;
    {
      UniqueFd a = eventfds().take(true);
      UniqueFd b = memfds().take(uint64_t{4096});
    }
    check.verify();
  }
}

}  // namespace
}  // namespace vhu::fuzz
