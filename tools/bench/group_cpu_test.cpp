#include "group_cpu.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

namespace {

// A child in a process group of its own, running `body` until killed.
pid_t group_of_one(void (*body)()) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    body();
    ::_exit(0);
  }
  ::setpgid(pid, pid);
  return pid;
}

void spin() {
  volatile uint64_t n = 0;
  for (;;) n = n + 1;
}

void sleep_forever() {
  for (;;) ::pause();
}

void end(pid_t pid) {
  ::kill(-pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
}

TEST(GroupCpu, CountsTheGroupsRunningTime) {
  const pid_t g = group_of_one(spin);
  ASSERT_GT(g, 0);
  // Other tests may share the CPUs (once, after a build, the spinner got
  // less than a tenth of one in a single window), so the meter gets up to ten
  // windows to see it run a fair part of the time. One thread never runs on
  // more than one CPU, in any window.
  double best = 0;
  for (int window = 0; window < 10 && best <= 10.0; ++window) {
    bench::CpuMeter m(g);
    m.start();
    ::usleep(300 * 1000);
    m.stop();
    EXPECT_TRUE(m.percent().has_value());
    if (!m.percent()) break;  // the spinner must still be ended
    EXPECT_LT(*m.percent(), 105.0);
    best = std::max(best, *m.percent());
  }
  end(g);
  EXPECT_GT(best, 10.0);
}

TEST(GroupCpu, IdleGroupUsesNone) {
  const pid_t pid = group_of_one(sleep_forever);
  ASSERT_GT(pid, 0);
  bench::CpuMeter m(pid);
  m.start();
  ::usleep(200 * 1000);
  m.stop();
  end(pid);
  ASSERT_TRUE(m.percent().has_value());
  EXPECT_LT(*m.percent(), 5.0);
}

TEST(GroupCpu, NoSuchGroupIsUnknown) {
  // Group ids are process ids; a process that was reaped leaves none behind.
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int st;
  ::waitpid(pid, &st, 0);
  EXPECT_FALSE(bench::group_cpu_ns(pid).has_value());
  bench::CpuMeter m(pid);
  m.start();
  m.stop();
  EXPECT_FALSE(m.percent().has_value());
}

}  // namespace
