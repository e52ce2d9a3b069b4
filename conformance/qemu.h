// QEMU 7.2's vhost-user message sequences for a vsock device, as the traces in
// shared/traces show them (qemu-7.2-vhost-user-vsock-boot.txt, -stop-cont.txt,
// -boot-allpf.txt, -guest-reset.txt): realize, start on DRIVER_OK and on
// every `cont`, stop. Deviations are explicit options.
#pragma once

#include <array>
#include <cstdint>
#include <functional>

#include "case.h"
#include "vhu/dirty_log.h"

namespace conform {

struct QemuOptions {
  // QEMU 7.2 accepts protocol features 0-16 only.
  uint64_t accept_protocol = (1ull << 17) - 1;
  // What the Linux 6.1 guest accepts of a vsock device, plus what QEMU adds:
  // SET_FEATURES 0x170000002 in the traces (no STREAM bit, no NOTIFY_ON_EMPTY).
  uint64_t guest_features = vhu::bit(vhu::feature::VSOCK_F_SEQPACKET) | vhu::bit(vhu::feature::RING_INDIRECT_DESC) |
                            vhu::bit(vhu::feature::RING_EVENT_IDX) | vhu::bit(vhu::feature::VERSION_1);
  bool negotiate_protocol_features = true;
  // Deviation: send no SET_VRING_ENABLE at start (for rings that must run enabled
  // without PROTOCOL_FEATURES, or to test started-but-disabled rings).
  bool enable_rings = true;
  // The kick fd handed over at start arrives already signalled, as QEMU's does.
  bool presignal_kick = true;
  // Post every rx buffer before start, as the Linux driver does before DRIVER_OK completes.
  bool post_rx_before_start = true;
};

class QemuFrontend {
 public:
  QemuFrontend(Ctx& ctx, QemuOptions opt = {});

  // Connection set-up at device realize (boot trace #1-#10).
  void realize();
  // DRIVER_OK / cont (#11-#28): calls, features, status, memory, rings, enable.
  void start();
  // stop / quit / guest reset (#29-#34). Returns the bases GET_VRING_BASE gave,
  // which the next start() sends back.
  std::array<uint32_t, 2> stop();
  // Guest driver reset: new ring memory, bases 0 (guest-reset trace #35-#51).
  void guest_reset();
  // Migration begins on a running device, as QEMU 10 begins it
  // (qemu-10.0-vhost-user-fs-migrate-restore.txt #28-#32): SET_LOG_BASE,
  // SET_FEATURES with VHOST_F_LOG_ALL, GET_STATUS, each ring's address again
  // with VHOST_VRING_F_LOG and log_guest_addr = log_addr(ring), which QEMU
  // sets to the used ring's guest-physical address (the default). Needs
  // LOG_SHMFD negotiated and LOG_ALL offered.
  void start_logging(const vhu::DirtyLog& log, const std::function<uint64_t(GuestQueue&)>& log_addr = {});
  // Whether QEMU could migrate this back-end: it refuses to without LOG_ALL
  // and LOG_SHMFD (hw/virtio/vhost.c, vhost-user.c migration blockers).
  bool can_log() const;

  VsockGuest& guest();
  Frontend& fe() { return ctx_.fe(); }
  uint64_t acked_features() const { return acked_; }
  bool uses_mem_slots() const { return mem_slots_; }
  std::array<uint32_t, 2> bases{0, 0};

 private:
  Ctx& ctx_;
  QemuOptions opt_;
  uint64_t acked_ = 0;
  bool mem_slots_ = false;
  bool mem_added_ = false;
  bool started_once_ = false;
};

}  // namespace conform
