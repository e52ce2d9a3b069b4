// One virtqueue of the emulated guest: ring memory in guest RAM driven
// through libvhu's driver side, plus its kick, call and err eventfds.
#pragma once

#include <cstdint>

#include "guest_ram.h"
#include "vhu/messages.h"
#include "vhu/unique_fd.h"
#include "vhu/virtqueue_driver.h"

namespace conform {

class GuestQueue {
 public:
  GuestQueue(GuestRam& ram, uint32_t index, uint32_t size, bool event_idx, int region);

  // A guest driver reset: fresh ring memory elsewhere, indices back to 0.
  void relocate(int region);

  uint32_t index() const { return index_; }
  uint32_t size() const { return size_; }
  vhu::DriverQueue& dq() { return dq_; }
  // SET_VRING_ADDR payload: front-end virtual addresses, as QEMU sends them.
  vhu::VringAddr addr() const;

  int kick_fd() const { return kick_.get(); }
  int call_fd() const { return call_.get(); }
  int err_fd() const { return err_.get(); }
  // QEMU hands over a new kick eventfd on every start, already signalled.
  void new_kick_fd(bool signalled);
  void new_call_fd();
  void kick();
  // Reads and clears the call eventfd: how many signals since the last read (0 = none).
  uint64_t take_calls();
  uint64_t take_errs();
  uint16_t used_idx() const { return dq_.device_used_idx(); }

 private:
  GuestRam& ram_;
  uint32_t index_, size_;
  bool event_idx_;
  uint64_t gpa_ = 0;
  vhu::DriverQueue dq_;
  vhu::UniqueFd kick_, call_, err_;
};

vhu::UniqueFd make_eventfd(uint64_t initial = 0);
uint64_t eventfd_take(int fd);

}  // namespace conform
