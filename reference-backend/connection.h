// One vsock stream or seqpacket flow between the guest and a peer (a host
// program on a Unix socket, or a sibling VM), as the device tracks it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "byte_ring.h"
#include "credit.h"
#include "vhu/unique_fd.h"
#include "vhu/vsock.h"

namespace vsockref {

struct ConnKey {
  uint64_t peer_cid;
  uint32_t peer_port;
  uint32_t guest_port;
  bool operator==(const ConnKey&) const = default;
};

struct ConnKeyHash {
  size_t operator()(const ConnKey& k) const {
    return std::hash<uint64_t>()(k.peer_cid * 0x9e3779b97f4a7c15ull ^ (uint64_t{k.peer_port} << 32 | k.guest_port));
  }
};

enum class ConnState {
  Connecting,   // host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE
  Established,  // data flows
};

struct Connection {
  uint64_t id = 0;
  ConnKey key{};
  uint16_t type = 1;  // VIRTIO_VSOCK_TYPE_*
  ConnState state = ConnState::Established;
  vhu::UniqueFd host;     // the host program's Unix socket
  PeerCredit guest;       // host-to-guest: what the guest can take
  LocalCredit local;      // guest-to-host: our buffer towards the host

  // Guest-to-host bytes accepted (within credit) but not yet written to the
  // host socket: never more than local.buf_alloc.
  std::vector<uint8_t> out;
  size_t out_head = 0;
  // SEQPACKET guest-to-host: sizes of complete messages in `out`, and the
  // bytes of the message still being assembled.
  std::deque<size_t> out_msgs;
  size_t out_partial = 0;
  // SEQPACKET host-to-guest: the message being cut into RW packets.
  std::vector<uint8_t> in_msg;
  size_t in_off = 0;
  bool in_msg_valid = false;
  // STREAM host-to-guest: bytes read from the host socket while the guest had
  // no credit for them, sent before anything still in the socket. Reading
  // them while the guest is being woken to return credit, rather than after,
  // takes the socket copy out of each credit window's round trip (README,
  // "Performance"). Capacity 0 for SEQPACKET, which has in_msg.
  ByteRing ahead;
  bool ahead_due = false;  // listed for VsockDevice::read_ahead()

  // rx work: what this flow owes the guest, sent in this order.
  bool want_request = false;
  bool want_response = false;
  bool want_credit_update = false;
  bool credit_request_sent = false;  // once per stall, cleared when credit moves
  uint32_t want_shutdown = 0;        // VIRTIO_VSOCK_SHUTDOWN_F_* still to send
  bool want_rst = false;             // last packet; the flow is gone after it
  bool in_work = false;

  // Host socket state.
  bool host_readable = false;  // epoll said so and we have not drained it yet
  bool host_eof = false;
  bool host_hup = false;       // the host program closed both directions
  uint32_t interest = 0;       // epoll events currently asked for

  // What the guest said with SHUTDOWN.
  bool guest_no_more_send = false;
  bool guest_no_more_rcv = false;
  bool close_after_flush = false;  // SHUTDOWN both: RST once `out` reached the host

  size_t out_bytes() const { return out.size() - out_head; }
  // Something flush_out() may write now: stream bytes, or a whole SEQPACKET
  // message. A message still waiting for its EOM is not: watching the socket
  // for room then would wake the loop without end.
  bool out_ready() const { return type == vhu::vsock::kTypeSeqpacket ? !out_msgs.empty() : out_bytes() > 0; }
  // All the guest sent has reached the host, SEQPACKET messages of no bytes
  // included.
  bool out_drained() const { return out_bytes() == 0 && out_msgs.empty(); }
};

}  // namespace vsockref
