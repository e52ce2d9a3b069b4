#include "group_cpu.h"

#include <time.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace bench {
namespace fs = std::filesystem;

namespace {

// Field 5 of /proc/PID/stat; the command name before it is in parentheses
// and may hold spaces or ')', so count from the last ')'.
std::optional<pid_t> process_group(const fs::path& proc_dir) {
  std::ifstream in(proc_dir / "stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string state;
  long ppid = 0, pgrp = 0;
  if (!(rest >> state >> ppid >> pgrp)) return std::nullopt;
  return static_cast<pid_t>(pgrp);
}

}  // namespace

std::optional<uint64_t> group_cpu_ns(pid_t pgid) {
  uint64_t total = 0;
  bool found = false;
  std::error_code ec;
  for (const auto& proc : fs::directory_iterator("/proc", ec)) {
    const std::string name = proc.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (process_group(proc.path()) != pgid) continue;
    // The process's CPU clock, not /proc's schedstat: it includes the time of
    // a thread still running on another CPU up to now (schedstat lags it by up
    // to a scheduler tick, several per cent of a short transfer), and of
    // threads that have ended.
    clockid_t clock;
    timespec ts{};
    if (::clock_getcpuclockid(static_cast<pid_t>(std::stol(name)), &clock) != 0 || ::clock_gettime(clock, &ts) != 0)
      continue;  // it ended meanwhile
    total += static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
    found = true;
  }
  if (ec || !found) return std::nullopt;
  return total;
}

namespace {
uint64_t now_ns() {
  const auto since = std::chrono::steady_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(since).count());
}
}  // namespace

void CpuMeter::start() {
  cpu0_ = group_cpu_ns(pgid_);
  wall0_ = now_ns();
}

void CpuMeter::stop() {
  wall1_ = now_ns();
  cpu1_ = group_cpu_ns(pgid_);
}

std::optional<double> CpuMeter::percent() const {
  if (!cpu0_ || !cpu1_ || *cpu1_ < *cpu0_ || wall1_ <= wall0_) return std::nullopt;
  return 100.0 * static_cast<double>(*cpu1_ - *cpu0_) / static_cast<double>(wall1_ - wall0_);
}

}  // namespace bench
