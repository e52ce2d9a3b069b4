// virtio-vsock credit arithmetic (virtio 1.3, 5.10.6.3 "Buffer Space
// Management"): free-running u32 counters compared modulo 2^32.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>

#include "faults.h"

namespace vsockref {

// What the device may send to one side of a stream.
//
// Bytes, as the spec meters them, and RW packets too. Linux since 6.12.92
// (and the stable kernels of the same fix) also bounds the packets it queues
// for a socket: it refuses one once (queued + 1) * SKB_TRUESIZE(0) exceeds
// buf_alloc, dropping its data or resetting the connection; SKB_TRUESIZE(0)
// is 576 bytes on x86-64 and arm64 (libkrun #795, gominimal/minimal #926).
// Later kernels merge queued stream packets near the limit, never one that
// ends a SEQPACKET message (spec/guest-runs/). Credit does
// not express that ceiling, and a host program that writes a few hundred
// bytes at a time would reach it with most of the byte window unused. So
// each RW packet's end is kept until the peer's fwd_cnt passes it, and a peer
// holding its share of packets has no credit, as one holding buf_alloc bytes
// has none.
struct PeerCredit {
  // 1 KiB a packet leaves a margin over 576 for other layouts of struct
  // sk_buff; at most kMaxPackets are counted, whatever buf_alloc says.
  static constexpr uint32_t kBytesPerPacket = 1024;
  static constexpr size_t kMaxPackets = 4096;

  uint32_t buf_alloc = 0;  // peer's receive buffer, from its last header
  uint32_t fwd_cnt = 0;    // bytes the peer has consumed, from its last header
  uint32_t tx_cnt = 0;     // bytes we have sent it
  std::deque<uint32_t> ends;  // tx_cnt after each RW packet the peer may still hold

  size_t max_packets() const {
    if (VSOCKREF_FAULT(bytes_only_credit)) return std::numeric_limits<size_t>::max();
    return std::clamp<size_t>(buf_alloc / kBytesPerPacket, 1, kMaxPackets);
  }
  size_t packets_left() const { return ends.size() >= max_packets() ? 0 : max_packets() - ends.size(); }
  // "u32 peer_free = peer_buf_alloc - (tx_cnt - peer_fwd_cnt);" A peer whose
  // fwd_cnt runs ahead of what we sent, or whose buf_alloc shrank below the
  // bytes in flight, gets zero rather than a wrapped huge value.
  uint32_t available() const {
    const uint32_t in_flight = tx_cnt - fwd_cnt;
    if (in_flight > buf_alloc || packets_left() == 0) return 0;
    return buf_alloc - in_flight;
  }
  void update(uint32_t new_buf_alloc, uint32_t new_fwd_cnt) {
    buf_alloc = new_buf_alloc;
    fwd_cnt = new_fwd_cnt;
    // Bytes in flight stay below 2^31 for any peer we send to, so a
    // difference that is not negative means fwd_cnt has passed that end.
    while (!ends.empty() && static_cast<int32_t>(fwd_cnt - ends.front()) >= 0) ends.pop_front();
  }
  // One RW packet of `n` payload bytes.
  void sent(uint32_t n) {
    tx_cnt += n;
    ends.push_back(tx_cnt);
  }
};

// What we advertise to the guest for the guest-to-host direction: a buffer of
// `buf_alloc` bytes, `fwd_cnt` of them passed on to the host so far.
struct LocalCredit {
  uint32_t buf_alloc = 0;
  uint32_t rx_cnt = 0;        // payload bytes received from the guest
  uint32_t fwd_cnt = 0;       // of those, forwarded to the host
  uint32_t reported_fwd = 0;  // fwd_cnt in the last header we sent

  uint32_t buffered() const { return rx_cnt - fwd_cnt; }
  // A guest that respects credit can never make this false.
  bool can_accept(uint32_t len) const { return len <= buf_alloc && buffered() <= buf_alloc - len; }
  // The space the guest believes it has, from what we last told it.
  uint32_t guest_view_free() const {
    const uint32_t in_flight = rx_cnt - reported_fwd;
    return in_flight > buf_alloc ? 0 : buf_alloc - in_flight;
  }
  // Tell the guest about freed space once it believes a quarter of the buffer
  // is in use: a bulk sender (Linux: 64 KiB packets into a 256 KiB buffer)
  // hears of each packet's worth as it is forwarded and never drains its
  // window waiting, while small writes still share one update per quarter.
  // At half, guest-to-host throughput at 64 KiB writes was about a third
  // lower (tools/bench-vsock, reference-backend/README.md).
  bool update_due() const { return fwd_cnt != reported_fwd && guest_view_free() < buf_alloc - buf_alloc / 4; }
};

}  // namespace vsockref
