// The loop the harnesses share across inputs: a back-end object that leaves
// a watch or a timer behind on it must stop the target, since the callback
// would run for a connection that is gone, in an input that did not make it.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <chrono>

#include "backend_process.h"

namespace vhu::fuzz {
namespace {

TEST(ProcessLoop, ObjectsThatLeaveTheLoopAsTheyFoundItPass) {
  for (int input = 0; input < 2; ++input) {
    ProcessLoop loop;
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(loop.get().add(fd.get(), EPOLLIN, [](uint32_t) {}).ok());
    const auto timer = loop.get().add_timer(std::chrono::milliseconds(5), [] {});
    loop.get().remove(fd.get());
    loop.get().cancel_timer(timer);
  }
  EXPECT_TRUE(process_loop().idle());
}

TEST(ProcessLoopDeathTest, AWatchLeftBehindIsAFinding) {
  EXPECT_DEATH(
      {
        ProcessLoop loop;
        static UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        (void)loop.get().add(fd.get(), EPOLLIN, [](uint32_t) {});
      },
      "idle");
}

TEST(ProcessLoopDeathTest, ATimerLeftBehindIsAFinding) {
  EXPECT_DEATH(
      {
        ProcessLoop loop;
        loop.get().add_timer(std::chrono::seconds(1), [] {});
      },
      "idle");
}

}  // namespace
}  // namespace vhu::fuzz
