// The emulated guest's virtio-vsock driver: rx buffers posted, packets sent on
// tx, rx packets collected, stream connections with credit accounting, and
// the host side of hybrid vsock (the Unix sockets a back-end exposes).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "guest_queue.h"
#include "guest_ram.h"
#include "vhu/unique_fd.h"
#include "vhu/vsock.h"

namespace conform {

struct RxPacket {
  vhu::vsock::Hdr hdr;
  std::vector<uint8_t> data;
  uint32_t used_len = 0;
  int framing = -1;  // which of VsockGuest::frame_rx()'s framings its buffer had
  std::vector<vhu::DriverBuffer> descs;  // the buffer's descriptors, as posted
};

struct GuestConn {
  uint32_t local_port = 0;   // guest side
  uint32_t peer_port = 0;    // host side, or a sibling VM's
  uint64_t peer_cid = vhu::vsock::kHostCid;
  uint16_t type = vhu::vsock::kTypeStream;
  bool established = false;
  bool reset = false;
  uint32_t shutdown_flags = 0;
  uint32_t buf_alloc = 256 * 1024;
  uint32_t fwd_cnt = 0;        // bytes the guest consumed
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;         // bytes the guest sent
  std::string received;
  // False: the guest's application reads nothing yet, so RW payload stays
  // queued (unread()) and fwd_cnt does not move; VsockGuest::read_queued()
  // reads it.
  bool reading = true;

  // What the peer's last header lets the guest send.
  uint32_t peer_credit() const { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }
  // Payload received and not yet consumed.
  uint32_t unread() const { return static_cast<uint32_t>(received.size()) - fwd_cnt; }
};

class VsockGuest {
 public:
  static constexpr uint32_t kBufSize = 4096;

  VsockGuest(GuestRam& ram, uint64_t guest_cid, bool event_idx, uint32_t queue_size = 128);

  GuestQueue& rx() { return rx_; }
  GuestQueue& tx() { return tx_; }
  uint64_t cid() const { return cid_; }

  // Fills every free rx descriptor with a 4 KiB device-writable buffer (not kicked).
  unsigned post_rx_buffers(unsigned max = ~0u);
  // While held, rx buffers the device used are not given back to it: a guest
  // that leaves the device no rx buffer ("rx full" from the device's side).
  void hold_rx(bool held) { hold_rx_ = held; }
  // From now on every `every`-th buffer posted holds `size` bytes instead (a
  // size below a header's 44 bytes: the device can only give it back empty).
  void interleave_small_rx(unsigned every, uint32_t size);
  unsigned small_rx_posted() const { return small_rx_posted_; }
  unsigned small_rx_returned() const { return small_rx_returned_; }  // given back empty
  // From now on the rx buffers posted take these framings in turn, each a
  // list of descriptor sizes summing to at most kBufSize, laid in the buffer
  // last piece first (so a device that writes on past a descriptor's end
  // writes into the wrong piece). None: one descriptor, as Linux posts.
  void frame_rx(std::vector<std::vector<uint32_t>> framings);
  // Queues one packet on tx; kicks when the device asks for it (or always).
  void send(const vhu::vsock::Hdr& h, std::span<const uint8_t> payload = {}, bool kick = true);
  // Queues one packet on tx laid out over descriptors of `pieces` bytes each
  // (summing to header plus payload), through an indirect table when
  // `indirect`: the framings drivers really use, which a device must take
  // whatever they are. The packet has guest memory of its own, reused once
  // the device has used the previous such packet.
  void send_framed(const vhu::vsock::Hdr& h, std::span<const uint8_t> payload, std::span<const uint32_t> pieces,
                   bool indirect = false);
  // A header from this guest to the host.
  vhu::vsock::Hdr hdr(vhu::vsock::Op op, uint32_t src_port, uint32_t dst_port, uint32_t len = 0) const;
  // Takes used rx buffers, decodes, reposts; handles connection bookkeeping.
  std::vector<RxPacket> poll_rx(bool repost = true);
  // Reclaims used tx buffers; returns how many.
  unsigned reclaim_tx();
  // Polls until pred(packet) holds for a received packet, or timeout. Others are kept in backlog().
  std::optional<RxPacket> wait_rx(const std::function<bool(const RxPacket&)>& pred, int timeout_ms);
  // Polls until the condition holds, or timeout.
  bool wait_until(const std::function<bool()>& cond, int timeout_ms);
  // Keeps polling for `ms` whatever arrives: time for the device to act on
  // what it was given (and for its packets to reach backlog()).
  void settle(int ms) { wait_until([] { return false; }, ms); }
  std::deque<RxPacket>& backlog() { return backlog_; }
  // While set, every packet poll_rx() takes is also appended to *sink.
  void record_rx(std::vector<RxPacket>* sink) { record_rx_ = sink; }

  // Stream connections (guest-initiated or accepted). Connections are keyed
  // by (local port, peer port) whatever the peer's CID: a case gives each of
  // its flows a local port of its own.
  GuestConn& connect(uint32_t local_port, uint32_t host_port);      // sends REQUEST
  GuestConn& connect_to(uint64_t peer_cid, uint32_t local_port, uint32_t peer_port,
                        uint16_t type = vhu::vsock::kTypeStream);
  void accept(uint32_t local_port, uint32_t host_port);               // sends RESPONSE
  // Accepts a received REQUEST from whichever CID sent it, taking the peer's
  // credit and the socket type from it.
  GuestConn& accept(const RxPacket& request);
  // Packets from `cid` (a sibling VM) are expected, not anomalies.
  void allow_peer(uint64_t cid) { peers_.push_back(cid); }
  void write(GuestConn& c, std::string_view data, bool kick = true);  // RW packets, within credit
  // One SEQPACKET message: RW packets within credit, EOM on the last (one of
  // no bytes for an empty message).
  void write_message(GuestConn& c, std::string_view m);
  // One RW packet of all of `data` framed as send_framed() does, once the
  // peer's credit allows it.
  void write_framed(GuestConn& c, std::string_view data, std::span<const uint32_t> pieces, bool indirect = false);
  // The application reads what `c` holds queued, and reads as it arrives from
  // then on; the peer hears of the freed space, as Linux tells it after a read.
  void read_queued(GuestConn& c);
  // A CREDIT_UPDATE on `c`: its type, buf_alloc and fwd_cnt.
  void credit_update(const GuestConn& c);
  GuestConn* conn(uint32_t local_port, uint32_t host_port);
  std::map<std::pair<uint32_t, uint32_t>, GuestConn>& conns() { return conns_; }
  // Packets seen that belong to no known connection or are odd (for verdicts).
  std::vector<std::string>& anomalies() { return anomalies_; }

  // Guest driver reset: forget rings, connections and buffers; fresh rings.
  void reset_rings(int rx_region, int tx_region);

 private:
  void handle(const RxPacket& p);
  void init_pools();
  vhu::vsock::Hdr conn_hdr(const GuestConn& c, vhu::vsock::Op op) const;
  // `h0` with len = `len` and, on a known connection, its credit fields.
  vhu::vsock::Hdr packet_hdr(const vhu::vsock::Hdr& h0, size_t len);
  // RW packets of at most a buffer's payload each, within credit; `eom` marks
  // the last (at least one packet, even for no bytes).
  void write_rw(GuestConn& c, std::string_view data, bool kick, bool eom);
  // Makes one tx chain available, kicking when the device asks (`kick`).
  uint16_t add_tx(std::span<const vhu::DriverBuffer> bufs, bool indirect, bool kick);

  GuestRam& ram_;
  uint64_t cid_;
  GuestQueue rx_, tx_;
  std::vector<uint64_t> rx_pool_, tx_pool_;  // buffer gpas not in a ring
  // An rx buffer in the ring: its pool buffer, the descriptors it was posted
  // as, and which of rx_framings_ those follow (-1: none).
  struct RxPosted {
    uint64_t gpa = 0;
    std::vector<vhu::DriverBuffer> descs;
    int framing = -1;
  };
  std::map<uint16_t, RxPosted> rx_inflight_;  // by head
  std::map<uint16_t, uint64_t> tx_inflight_;  // head -> buffer gpa
  bool hold_rx_ = false;
  std::vector<std::vector<uint32_t>> rx_framings_;
  unsigned rx_framed_posted_ = 0;
  uint64_t framed_gpa_ = 0;                                 // send_framed()'s packet memory
  std::optional<uint16_t> framed_head_;                     // its packet, until used
  unsigned small_rx_every_ = 0, rx_posted_ = 0, small_rx_posted_ = 0, small_rx_returned_ = 0;
  uint32_t small_rx_size_ = kBufSize;
  std::deque<RxPacket> backlog_;
  std::vector<RxPacket>* record_rx_ = nullptr;
  std::map<std::pair<uint32_t, uint32_t>, GuestConn> conns_;
  std::vector<std::string> anomalies_;
  std::vector<uint64_t> peers_{vhu::vsock::kHostCid};
};

// The host side of hybrid vsock: `uds` is the back-end's --uds-path.
class HostSide {
 public:
  explicit HostSide(std::string uds) : uds_(std::move(uds)) {}
  // Host-initiated: connects to uds and writes "CONNECT <port>\n". The "OK "
  // line comes once the guest accepted (read_line).
  vhu::UniqueFd connect(uint32_t guest_port);
  // Guest-initiated connections to host port P arrive on "<uds>_P".
  vhu::UniqueFd listen(uint32_t port);
  const std::string& uds() const { return uds_; }

 private:
  std::string uds_;
};

// Socket helpers for host peers.
bool write_all(int fd, std::string_view data);
// Reads until `n` bytes arrived, EOF or timeout; returns what came.
std::string read_n(int fd, size_t n, int timeout_ms);
// Whatever arrives within timeout_ms (empty on none); eof set on EOF.
// One line up to and including '\n' (or what came before the timeout).
std::string read_line(int fd, int timeout_ms);
std::string read_some(int fd, int timeout_ms, bool* eof = nullptr);
vhu::UniqueFd accept_timeout(int listen_fd, int timeout_ms);

}  // namespace conform
