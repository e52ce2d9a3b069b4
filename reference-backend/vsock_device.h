// The virtio-vsock device model (virtio 1.3, 5.10): connections, credit,
// STREAM and SEQPACKET, the rx/tx/event rings and the TRANSPORT_RESET rule
// after a load. It touches rings only through RingIo and host sockets only
// through the event loop; the vhost-user layer owns both.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "connection.h"
#include "device_state.h"
#include "event_loop.h"
#include "ring_io.h"
#include "router.h"
#include "vhu/vsock.h"

namespace vsockref {

struct VsockOptions {
  uint64_t guest_cid = 3;
  uint32_t tx_buffer_size = 256 * 1024;  // per-connection guest-to-host buffer (our buf_alloc)
  std::string uds_path;                 // empty: no host side (in-process fuzzing)
  std::string name = "vm";              // log prefix
};

// A packet relayed between sibling guests, header and payload copied.
struct RelayPacket {
  vhu::vsock::Hdr hdr;
  std::vector<uint8_t> payload;
};

class VsockDevice {
 public:
  // After a load: TRANSPORT_RESET owed to the driver (Pending), sent and
  // waiting for the driver's config read (AwaitConfigRead), or done (None).
  enum class ResetState { None, Pending, AwaitConfigRead };

  VsockDevice(EventLoop& loop, RingIo& io, VsockOptions opts, Router* router = nullptr);
  ~VsockDevice();
  VsockDevice(const VsockDevice&) = delete;
  VsockDevice& operator=(const VsockDevice&) = delete;

  const VsockOptions& options() const { return opts_; }
  static uint64_t device_features();
  void set_features(uint64_t acked) { features_ = acked; }
  std::array<uint8_t, vhu::vsock::kConfigSize> config() const;

  // Runs every ring the vhost-user layer lets us use: event, tx, then rx.
  void process();
  // The vhost-user layer changed a ring's started/enabled state.
  void rings_changed();
  // Runs after process() has delivered its notifications: work that does not
  // touch the rings and should not delay the guest's wake-up. Reads host
  // data ahead for flows that ran out of guest credit. When that finds the
  // host's end of stream, it asks for processing again (request_processing):
  // the caller then runs process() once more.
  void read_ahead();
  // The front-end read the config space (GET_CONFIG).
  void config_read();
  // Device reset (RESET_DEVICE, status 0, driver re-initialised the rings,
  // front-end gone): every flow is closed, the host sees EOF.
  void reset();

  DeviceState save(uint64_t features, uint64_t protocol_features) const;
  // The blob parsed and validated; features were checked by the caller.
  void loaded(const DeviceState& s);

  // A host program finished "CONNECT <port>\n" on uds-path.
  void host_connect(vhu::UniqueFd fd, uint32_t guest_port);
  // A sibling's guest sent us a packet.
  void relay_in(RelayPacket p);

  ResetState reset_state() const { return reset_state_; }
  size_t connection_count() const { return conns_.size(); }
  // Host-to-guest bytes one STREAM flow may read beyond the guest's credit:
  // one window of Linux's default buffer (Connection::ahead).
  static constexpr size_t kReadAhead = 256u << 10;
  // Read-ahead storage of all flows together; a flow that finds it spent reads
  // only within credit. A flow keeps its kReadAhead until it closes.
  static constexpr size_t kReadAheadTotal = 16u << 20;
  size_t max_read_ahead() const {
    size_t m = 0;
    for (const auto& [id, c] : conns_) m = std::max(m, c->ahead.size());
    return m;
  }
  // The largest guest-to-host backlog of any one flow: credit keeps it within
  // tx_buffer_size whatever the guest sends (the vsock_packets fuzzer checks).
  size_t max_host_backlog() const {
    size_t m = 0;
    for (const auto& [id, c] : conns_) m = std::max(m, c->out_bytes());
    return m;
  }

 private:
  struct HeldConnect {
    vhu::UniqueFd fd;
    uint32_t guest_port;
  };

  bool stream_ok() const;
  bool seqpacket_ok() const;
  bool type_ok(uint16_t type) const;
  bool accepting_incoming() const { return reset_state_ == ResetState::None; }
  // Packets relayed from a sibling VM pass the same gate as host connects.
  bool relay_open() const;
  bool rx_allowed() const;
  bool tx_allowed() const;

  void process_event();
  void process_tx();
  void process_rx();
  void handle_tx_chain(const vhu::Chain& c);
  void handle_host_packet(const vhu::vsock::Hdr& h, const vhu::Chain& c);
  void handle_sibling_packet(VsockDevice* sib, const vhu::vsock::Hdr& h, const vhu::Chain& c);
  // Our guest's header on a sibling flow tells what it holds of that flow.
  void note_guest_to_sibling(const vhu::vsock::Hdr& h);
  // The first relayed packet the guest may take now; relay_.end() if none.
  std::deque<RelayPacket>::iterator next_relay();
  void guest_request(const vhu::vsock::Hdr& h);
  void guest_rw(Connection& conn, const vhu::vsock::Hdr& h, const vhu::Chain& c);
  void guest_shutdown(Connection& conn, uint32_t flags);

  // rx: have_rx_work() makes sure the next item really owes a packet before
  // a buffer is taken; fill_rx() then always writes one and returns its size.
  bool have_rx_work();
  uint32_t fill_rx(const vhu::Chain& c);
  uint32_t fill_conn(Connection& conn, const vhu::Chain& c);
  uint32_t fill_data(Connection& conn, const vhu::Chain& c);
  // More rx buffers for the read fill_data() is about to do, up to `more`
  // bytes of room: their iovecs go to `iov`, the buffers to rx_batch_.
  // Returns the bytes the host socket held (0 if unknown).
  uint64_t gather_rx(Connection& conn, uint64_t more, std::vector<iovec>& iov);
  std::optional<vhu::Chain> pop_rx();  // the next rx buffer (io_.pop, but for a fault)
  uint32_t fill_seqpacket(Connection& conn, const vhu::Chain& c, uint64_t room);
  uint32_t fill_from_ahead(Connection& conn, const vhu::Chain& c, uint64_t room);
  // The packet that tells the guest the host program's stream ended.
  uint32_t write_host_end(Connection& conn, const vhu::Chain& c);
  // The flow may have run out of guest credit with host data still to come:
  // have read_ahead() look at it.
  void note_stalled(Connection& conn);
  void read_ahead(Connection& conn);
  void end_of_stream_check(Connection& conn);
  void abort_conn(Connection& conn, const std::string& why);
  uint32_t write_packet(const vhu::Chain& c, const vhu::vsock::Hdr& h);
  vhu::vsock::Hdr reply_hdr(Connection& conn, vhu::vsock::Op op, uint32_t flags = 0, uint32_t len = 0);

  Connection* find(const ConnKey& k);
  Connection& create(const ConnKey& k, uint16_t type, vhu::UniqueFd host);
  void destroy(Connection& conn);
  void schedule(Connection& conn);
  void queue_rst(const vhu::vsock::Hdr& to_guest);
  void queue_rst_reply(const vhu::vsock::Hdr& from_guest);
  void update_interest(Connection& conn);
  void on_host_event(uint64_t id, uint32_t events);
  void flush_out(Connection& conn);
  void admit_held();
  uint32_t alloc_host_port(uint32_t guest_port);

  EventLoop& loop_;
  RingIo& io_;
  VsockOptions opts_;
  Router* router_;
  uint64_t features_ = 0;
  ResetState reset_state_ = ResetState::None;
  bool spurious_reset_spent_ = false;  // the spurious_transport_reset fault's one event, since reset()
  // Pending with rx and tx running but no event ring: QEMU keeps the event
  // queue for good, crosvm hands it over right after rx and tx. Waiting this
  // long tells them apart (README, "Transport reset after a load").
  static constexpr std::chrono::milliseconds kEventRingGrace{300};
  EventLoop::TimerId event_ring_timer_ = 0;
  void activate_without_event_ring();

  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::unordered_map<ConnKey, uint64_t, ConnKeyHash> by_key_;
  uint64_t next_id_ = 1;
  uint32_t next_host_port_ = 1u << 30;
  std::deque<uint64_t> work_;
  std::deque<vhu::vsock::Hdr> rsts_;  // RSTs for flows we do not track
  std::deque<RelayPacket> relay_;     // packets from siblings, in order
  size_t relay_bytes_ = 0;
  // Sibling flows into our guest, metered in packets as host flows are
  // (PeerCredit): Linux resets a flow whose socket holds too many, however
  // few bytes they carry, and the sending guest meters bytes only. Keyed as
  // our guest sees the flow; known from the first header our guest sends on it.
  std::unordered_map<ConnKey, PeerCredit, ConnKeyHash> relay_credit_;
  std::vector<HeldConnect> held_;     // host connects waiting for activation
  std::vector<uint8_t> scratch_;
  // rx buffers filled by the same read as the one process_rx() is filling;
  // it pushes them right after that one, so the guest sees stream order.
  struct RxFill {
    vhu::Chain chain;
    uint32_t room;     // payload bytes it can take
    uint32_t written;  // what push() reports
    bool header_fits;  // false: returned empty (used length 0)
  };
  std::vector<RxFill> rx_batch_;
  std::vector<uint64_t> ahead_due_;  // flows for read_ahead()
  bool rx_starved_ = false;           // rx work met no rx buffer (for the tx_waits_for_rx fault)
  size_t ahead_storage_ = 0;         // ByteRing storage allocated, all flows
};

}  // namespace vsockref
