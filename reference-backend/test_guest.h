// Test harness: a guest and a front-end played with libvhu, against the
// reference back-end running in-process on its own event-loop thread.
// Guest RAM is two memfd regions whose guest-physical addresses, front-end
// virtual addresses (made up) and our own mapping all differ, and the second
// region is mapped from a non-zero file offset.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "event_loop.h"
#include "router.h"
#include "vhu/channel.h"
#include "vhu/messages.h"
#include "vhu/virtqueue_driver.h"
#include "vhu/vsock.h"
#include "vm.h"

namespace vsockref::test {

class GuestRam {
 public:
  struct Region {
    uint64_t gpa, size, uva, offset;
    uint8_t* local = nullptr;
    int fd = -1;
    uint64_t next = 0;  // bump allocator, bytes used
  };
  explicit GuestRam(uint64_t size0 = 8u << 20, uint64_t size1 = 8u << 20);
  ~GuestRam();
  // Bytes from region `r`, aligned.
  uint64_t alloc(uint64_t bytes, uint64_t align = 64, int r = 0);
  uint8_t* host(uint64_t gpa) const;
  uint64_t uva(uint64_t gpa) const;
  vhu::Message mem_table(bool need_reply = true) const;
  vhu::Message add_region(int r, bool need_reply = true) const;
  Region regions[2];
};

struct Packet {
  vhu::vsock::Hdr hdr;
  std::vector<uint8_t> payload;
};

// The front-end and the guest driver.
class Guest {
 public:
  static constexpr uint32_t kQueueSize = 128;
  static constexpr uint32_t kRxBuf = 4096;

  explicit Guest(vhu::UniqueFd frontend_sock, uint64_t cid = 3);

  // One request; the reply when one is expected (own reply or need_reply).
  vhu::Result<std::optional<vhu::Message>> request(vhu::Message m, bool expect_reply);
  uint64_t request_u64(vhu::Message m);  // asserts a u64 reply
  void send(vhu::Message m);             // no reply expected

  // The QEMU 7.2 start sequence from ../shared/traces (realize, then
  // DRIVER_OK), with the kick fds handed over already signalled and the
  // enables after the kicks. `with_event` hands ring 2 over as well.
  void realize(uint64_t protocol_features);
  void start(bool with_event = false, uint16_t base_rx = 0, uint16_t base_tx = 0);
  // QEMU's stop: SET_VRING_ENABLE(0) then GET_VRING_BASE for each ring.
  std::vector<uint16_t> stop(bool with_event = false);

  // Guest driver. Rings are laid out once (init_rings, also done by start)
  // so buffers can be posted before the front-end starts the device.
  void init_rings();
  void post_event(int n);
  void post_rx(int n, uint32_t size = kRxBuf, bool split = false);
  void send_pkt(const vhu::vsock::Hdr& h, const std::vector<uint8_t>& payload = {});
  std::optional<Packet> recv_pkt(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  std::optional<uint32_t> recv_event(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  // Tx buffers the device has returned.
  int reap_tx();
  void kick(unsigned q);
  vhu::vsock::Hdr hdr(uint64_t dst_cid, uint32_t src_port, uint32_t dst_port, vhu::vsock::Op op,
                      uint32_t len = 0) const;

  GuestRam ram;
  vhu::Channel chan;
  vhu::DriverQueue rxq, txq, evq;
  uint64_t ring_gpa[3] = {};
  vhu::UniqueFd kick_fd[3], call_fd[3], err_fd[3];
  uint64_t cid;
  uint64_t features = 0;
  uint32_t buf_alloc = 256 * 1024;
  uint32_t fwd_cnt = 0;
  int rx_returned_empty = 0;  // rx buffers the device gave back with used length 0
  uint16_t type = vhu::vsock::kTypeStream;

 private:
  void setup_ring(unsigned q, vhu::DriverQueue& dq, uint16_t base);
  // A used rx buffer goes back to the ring exactly as it was.
  void repost_rx(uint16_t used_id, const std::vector<vhu::DriverBuffer>& bufs);
  struct RxPart {
    uint16_t head;
    uint64_t gpa;
    uint32_t len;
  };
  std::vector<RxPart> rx_bufs_;  // each posted rx buffer's descriptors, in chain order
  std::vector<uint64_t> tx_free_;
};

// The reference back-end on a socketpair, its loop on a thread.
class Harness {
 public:
  explicit Harness(VmConfig cfg = {});
  ~Harness();
  std::string dir;  // temp dir holding uds-path
  VmConfig cfg;
  EventLoop loop;
  Router router;
  std::unique_ptr<Vm> vm;
  std::unique_ptr<Guest> guest;
  std::thread thread;
  // Runs `fn` on the loop thread and waits for it.
  void on_loop(const std::function<void()>& fn);
};

// Host side helpers.
vhu::UniqueFd host_connect(const std::string& uds, uint32_t port);  // writes CONNECT, does not wait for OK
std::string read_line(int fd, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
vhu::UniqueFd listen_port(const std::string& uds, uint32_t port);
vhu::UniqueFd accept_one(int listen_fd, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
bool write_all(int fd, const uint8_t* p, size_t n);
size_t read_some(int fd, uint8_t* p, size_t n, std::chrono::milliseconds timeout);

}  // namespace vsockref::test
