// CPU time of a process group, for telling a back-end that is busy all the
// time (its cost per byte limits it) from one that waits (round trips with
// the guest or the host program limit it).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace bench {

// Nanoseconds every process in group `pgid` has run, all its threads
// included (each process's CPU clock; the group's members are found in
// /proc). A process that ends takes its time with it, so take the difference
// over a stretch in which the back-end ends none. Nullopt when no process of
// the group is found.
std::optional<uint64_t> group_cpu_ns(pid_t pgid);

// The group's CPU use between start() and stop(), as a percentage of one CPU
// busy for that wall time. Call them where the transfer's clock starts and
// stops, so that the figure and the rate cover the same stretch.
class CpuMeter {
 public:
  explicit CpuMeter(pid_t pgid) : pgid_(pgid) {}
  void start();
  void stop();
  std::optional<double> percent() const;

 private:
  pid_t pgid_;
  std::optional<uint64_t> cpu0_, cpu1_;
  uint64_t wall0_ = 0, wall1_ = 0;
};

}  // namespace bench
