#include "group_cpu.h"

#include <time.h>

#include <chrono>

#include "vhu/process_group.h"

namespace bench {

namespace {
uint64_t now_ns() {
  const auto since = std::chrono::steady_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(since).count());
}
}  // namespace

std::optional<uint64_t> group_cpu_ns(pid_t pgid) {
  uint64_t total = 0;
  bool found = false;
  for (const vhu::GroupMember& m : vhu::process_group_members(pgid)) {
    // The process's CPU clock, not /proc's schedstat: it includes the time of
    // a thread still running on another CPU up to now (schedstat lags it by up
    // to a scheduler tick, several per cent of a short transfer), and of
    // threads that have ended.
    clockid_t clock;
    timespec ts{};
    if (::clock_getcpuclockid(m.pid, &clock) != 0 || ::clock_gettime(clock, &ts) != 0)
      continue;  // it ended meanwhile
    total += static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
    found = true;
  }
  if (!found) return std::nullopt;
  return total;
}

// The CPU readings are taken inside the wall-clock window, not around it: a
// meter preempted between the two would otherwise count CPU time from
// outside the window, and one busy thread read above 100 % (up to 114 % on a
// loaded 2-CPU machine).
void CpuMeter::start() {
  wall0_ = now_ns();
  cpu0_ = group_cpu_ns(pgid_);
}

void CpuMeter::stop() {
  cpu1_ = group_cpu_ns(pgid_);
  wall1_ = now_ns();
}

std::optional<double> CpuMeter::percent() const {
  if (!cpu0_ || !cpu1_ || *cpu1_ < *cpu0_ || wall1_ <= wall0_) return std::nullopt;
  return 100.0 * static_cast<double>(*cpu1_ - *cpu0_) / static_cast<double>(wall1_ - wall0_);
}

}  // namespace bench
