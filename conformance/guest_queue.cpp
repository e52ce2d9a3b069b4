#include "guest_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

namespace conform {

vhu::UniqueFd make_eventfd(uint64_t initial) {
  int fd = eventfd(static_cast<unsigned>(initial), EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
  return vhu::UniqueFd(fd);
}

uint64_t eventfd_take(int fd) {
  uint64_t v = 0;
  if (fd < 0 || ::read(fd, &v, sizeof v) != sizeof v) return 0;
  return v;
}

GuestQueue::GuestQueue(GuestRam& ram, uint32_t index, uint32_t size, bool event_idx, int region)
    : ram_(ram), index_(index), size_(size), event_idx_(event_idx) {
  kick_ = make_eventfd();
  call_ = make_eventfd();
  err_ = make_eventfd();
  relocate(region);
}

void GuestQueue::relocate(int region) {
  const uint64_t bytes = vhu::DriverQueue::area_bytes(size_);
  gpa_ = ram_.alloc(bytes, 4096, region);
  std::memset(ram_.host(gpa_, bytes), 0, bytes);
  dq_ = vhu::DriverQueue();
  auto r = dq_.init(ram_.host(gpa_, bytes), gpa_, size_, event_idx_);
  if (!r) throw std::runtime_error("suite bug: DriverQueue::init: " + r.message());
}

vhu::VringAddr GuestQueue::addr() const {
  vhu::VringAddr a{};
  a.index = index_;
  a.flags = 0;
  a.desc_user_addr = ram_.gpa_to_uva(dq_.desc_gpa());
  a.used_user_addr = ram_.gpa_to_uva(dq_.used_gpa());
  a.avail_user_addr = ram_.gpa_to_uva(dq_.avail_gpa());
  // QEMU always fills the log address (a gpa) even with logging off.
  a.log_guest_addr = dq_.used_gpa();
  return a;
}

void GuestQueue::new_kick_fd(bool signalled) { kick_ = make_eventfd(signalled ? 1 : 0); }
void GuestQueue::new_call_fd() { call_ = make_eventfd(); }

void GuestQueue::kick() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(kick_.get(), &one, sizeof one);
}

uint64_t GuestQueue::take_calls() { return eventfd_take(call_.get()); }
uint64_t GuestQueue::take_errs() { return eventfd_take(err_.get()); }

}  // namespace conform
