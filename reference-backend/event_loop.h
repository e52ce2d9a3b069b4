// One epoll set with per-fd callbacks and one-shot timers. Every VM, its
// front-end socket, kick fds, host sockets and device-state pipes live in one
// loop on one thread: sibling routing then needs no locks (README, "Threads").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <vector>
#include <unordered_map>

#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vsockref {

class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;
  using Clock = std::chrono::steady_clock;
  using TimerId = uint64_t;

  EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;
  ~EventLoop();

  bool valid() const { return ep_.valid(); }

  // Level-triggered. Fails for fds epoll cannot watch (regular files).
  vhu::Result<void> add(int fd, uint32_t events, Handler handler);
  void modify(int fd, uint32_t events);
  void remove(int fd);
  bool watching(int fd) const { return entries_.count(fd) != 0; }
  // Nothing watched, no timer set, no work posted: what a loop that outlives
  // its connections must be once they are all gone.
  bool idle() const;

  TimerId add_timer(std::chrono::milliseconds delay, std::function<void()> fn);
  void cancel_timer(TimerId id);

  // Waits up to timeout_ms (-1: until something happens; never past the next
  // timer), runs the callbacks that are due. Returns the events handled.
  int run_once(int timeout_ms);
  // Runs until stop() (callable from any thread).
  void run();
  void stop();
  bool stopping() const { return stop_; }
  // Runs fn on the loop's thread at its next round (callable from any thread).
  void post(std::function<void()> fn);
  // Rounds run so far (callable from any thread): an idle loop's count stays
  // put, so a test can tell a loop that sleeps from one that keeps waking.
  uint64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    uint32_t generation;
    uint32_t events;
    std::shared_ptr<Handler> handler;
  };
  vhu::UniqueFd ep_;
  vhu::UniqueFd wake_;
  std::unordered_map<int, Entry> entries_;
  uint32_t next_generation_ = 1;
  std::multimap<Clock::time_point, std::pair<TimerId, std::function<void()>>> timers_;
  TimerId next_timer_ = 1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rounds_{0};
  mutable std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
};

// Sets O_NONBLOCK; the front-end hands us fds we must never block on.
void set_nonblocking(int fd);

}  // namespace vsockref
