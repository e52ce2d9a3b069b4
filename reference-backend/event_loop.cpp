#include "event_loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "log.h"

namespace vsockref {

void set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

EventLoop::EventLoop() : ep_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (ep_.valid() && wake_.valid()) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(static_cast<uint32_t>(wake_.get()));  // generation 0
    ::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
  }
}

EventLoop::~EventLoop() = default;

vhu::Result<void> EventLoop::add(int fd, uint32_t events, Handler handler) {
  if (fd < 0) return vhu::Err("event loop: invalid fd");
  if (entries_.count(fd)) remove(fd);
  const uint32_t gen = next_generation_++;
  if (next_generation_ == 0) next_generation_ = 1;  // 0 marks the wake fd
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (static_cast<uint64_t>(gen) << 32) | static_cast<uint32_t>(fd);
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return vhu::Err(fmt::format("epoll_ctl(ADD, fd {}): {}", fd, std::strerror(errno)), vhu::ErrorKind::Io);
  entries_[fd] = Entry{gen, events, std::make_shared<Handler>(std::move(handler))};
  return vhu::Ok();
}

void EventLoop::modify(int fd, uint32_t events) {
  auto it = entries_.find(fd);
  if (it == entries_.end() || it->second.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = (static_cast<uint64_t>(it->second.generation) << 32) | static_cast<uint32_t>(fd);
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, fd, &ev) == 0) it->second.events = events;
}

void EventLoop::remove(int fd) {
  auto it = entries_.find(fd);
  if (it == entries_.end()) return;
  ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
  entries_.erase(it);
}

bool EventLoop::idle() const {
  std::lock_guard<std::mutex> lock(posted_mu_);
  return entries_.empty() && timers_.empty() && posted_.empty();
}

EventLoop::TimerId EventLoop::add_timer(std::chrono::milliseconds delay, std::function<void()> fn) {
  const TimerId id = next_timer_++;
  timers_.emplace(Clock::now() + delay, std::make_pair(id, std::move(fn)));
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      return;
    }
  }
}

int EventLoop::run_once(int timeout_ms) {
  rounds_.fetch_add(1, std::memory_order_relaxed);
  if (!timers_.empty()) {
    const auto now = Clock::now();
    const auto due = timers_.begin()->first;
    const int until = due <= now ? 0
                                 : static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count()) + 1;
    if (timeout_ms < 0 || until < timeout_ms) timeout_ms = until;
  }
  epoll_event evs[64];
  // A poll with no fd watched could only report the wake fd, whose posted
  // work is run below anyway (a fuzz harness polls after every message).
  const int n = timeout_ms == 0 && entries_.empty() ? 0 : ::epoll_wait(ep_.get(), evs, 64, timeout_ms);
  int handled = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
    const uint32_t gen = static_cast<uint32_t>(evs[i].data.u64 >> 32);
    if (gen == 0) {
      uint64_t v;
      ssize_t r = ::read(wake_.get(), &v, sizeof v);
      (void)r;
      continue;
    }
    // An earlier callback of this round may have removed the fd or reused
    // its number: the generation tells a stale event apart.
    auto it = entries_.find(fd);
    if (it == entries_.end() || it->second.generation != gen) continue;
    auto handler = it->second.handler;
    (*handler)(evs[i].events);
    ++handled;
  }
  std::vector<std::function<void()>> posted;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted.swap(posted_);
  }
  for (auto& fn : posted) {
    fn();
    ++handled;
  }
  // Timers that are due, including ones a callback above just made due.
  // (No clock read without a timer: most rounds of a busy loop have none.)
  if (timers_.empty()) return handled;
  const auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto fn = std::move(timers_.begin()->second.second);
    timers_.erase(timers_.begin());
    fn();
    ++handled;
  }
  return handled;
}

void EventLoop::run() {
  while (!stop_) run_once(-1);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  const uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof one);
  (void)r;
}

void EventLoop::stop() {
  stop_ = true;
  const uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof one);
  (void)r;
}

}  // namespace vsockref
