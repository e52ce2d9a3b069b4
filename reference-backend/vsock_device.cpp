#include "vsock_device.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "chain_io.h"
#include "faults.h"
#include "handshake.h"
#include "log.h"
#include "vhu/features.h"

namespace vsockref {

using vhu::vsock::Hdr;
using vhu::vsock::Op;
namespace vs = vhu::vsock;

namespace {
constexpr size_t kMaxConnections = 1024;
constexpr size_t kMaxPendingRsts = 256;
constexpr size_t kMaxHeldConnects = 64;
constexpr size_t kMaxRelayBytes = 4u << 20;
constexpr size_t kMaxRelayPackets = 4096;
constexpr size_t kMaxRelayFlows = 1024;  // metered sibling flows per VM; others go unmetered
constexpr uint32_t kMaxPayload = 64u << 10;  // largest RW we put in one rx buffer
constexpr size_t kMaxRxBatch = 64;           // rx buffers one recvmsg may fill
constexpr size_t kMaxSeqMessage = 1u << 20;  // largest host SEQPACKET message we take

uint16_t op_of(Op o) { return static_cast<uint16_t>(o); }
// A relayed packet's flow, as the guest it goes to sees it.
ConnKey relay_key(const Hdr& h) { return {h.src_cid, h.src_port, h.dst_port}; }

// Bytes waiting in a host socket (SIOCINQ); -1 when it cannot tell. We are
// the socket's only reader, so they stay there until we read them.
int socket_queued(int fd) {
  int n = 0;
  return ::ioctl(fd, SIOCINQ, &n) == 0 ? n : -1;
}

// SEQPACKET host sockets carry the sender's credentials with each message
// (SO_PASSCRED), so that a message of no bytes can be told from the end of
// the host's messages: both read as 0 bytes. (Linux then binds the socket to
// an autobind abstract name at its first send; the host program sees that
// name instead of none, and nothing else changes.)
void pass_credentials(int fd) {
  const int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
    VLOG(Warn, "SO_PASSCRED on a host SEQPACKET socket: {}; a message of no bytes just before the host program "
               "closes will read as its end", std::strerror(errno));
}

// The SHUTDOWN flags for the host program's end of stream. RECEIVE only once
// it closed both directions (EPOLLHUP): after shutdown(SHUT_WR) alone it still
// reads, and a Linux guest told RECEIVE fails its own sends with EPIPE.
uint32_t host_end_flags(const Connection& conn) {
  const bool both = conn.host_hup || VSOCKREF_FAULT(half_close_is_close);
  return vs::kShutdownSend | (both ? vs::kShutdownRcv : 0);
}

// After a peek of 0 bytes at a SEQPACKET host socket: whether that is the
// host program's end (closed, or shut down writing) rather than a message of
// no bytes. A message comes with SCM_CREDENTIALS, the end with nothing.
bool peer_has_shut_down(int fd) {
  if (VSOCKREF_FAULT(seqpacket_empty_is_end)) return true;
  uint8_t probe;
  iovec iov{&probe, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  // Room for the credentials only: descriptors the host program attached
  // are not installed (MSG_CTRUNC), as the read that takes the message
  // drops them.
  if (::recvmsg(fd, &m, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_CMSG_CLOEXEC) != 0) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) return false;
  // Without credentials (SO_PASSCRED refused) the poll is what is left.
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) != 0;
}

// The corrupt_stream_at_64k fault: flips the flow's 65,537th byte if it is
// among the `n` about to go to the guest from `iov`.
void corrupt_at_64k(const Connection& conn, const iovec* iov, size_t count, uint64_t n) {
  if (!VSOCKREF_FAULT(corrupt_stream_at_64k) || 65536 - conn.guest.tx_cnt >= n) return;
  size_t off = 65536 - conn.guest.tx_cnt;
  for (size_t i = 0; i < count; ++i) {
    if (off < iov[i].iov_len) {
      static_cast<uint8_t*>(iov[i].iov_base)[off] ^= 0xff;
      return;
    }
    off -= iov[i].iov_len;
  }
}
}  // namespace

VsockDevice::VsockDevice(EventLoop& loop, RingIo& io, VsockOptions opts, Router* router)
    : loop_(loop), io_(io), opts_(std::move(opts)), router_(router) {}

VsockDevice::~VsockDevice() { reset(); }

uint64_t VsockDevice::device_features() {
  namespace f = vhu::feature;
  return vhu::bit(f::VSOCK_F_STREAM) | vhu::bit(f::VSOCK_F_SEQPACKET) | vhu::bit(f::VSOCK_F_NO_IMPLIED_STREAM);
}

std::array<uint8_t, vs::kConfigSize> VsockDevice::config() const { return vs::encode_config(opts_.guest_cid); }

// virtio 5.10.3: "If no feature bit has been negotiated, the device SHOULD
// act as if VIRTIO_VSOCK_F_STREAM has been negotiated"; SEQPACKET without
// NO_IMPLIED_STREAM may imply STREAM too (Linux 6.1 acks only SEQPACKET).
bool VsockDevice::stream_ok() const {
  namespace f = vhu::feature;
  return vhu::has_bit(features_, f::VSOCK_F_STREAM) || !vhu::has_bit(features_, f::VSOCK_F_NO_IMPLIED_STREAM);
}

bool VsockDevice::seqpacket_ok() const { return vhu::has_bit(features_, vhu::feature::VSOCK_F_SEQPACKET); }

bool VsockDevice::type_ok(uint16_t type) const {
  if (type == vs::kTypeStream) return stream_ok();
  if (type == vs::kTypeSeqpacket) return seqpacket_ok();
  return false;
}

bool VsockDevice::rx_allowed() const {
  return reset_state_ != ResetState::Pending || VSOCKREF_FAULT(rx_before_transport_reset);
}

bool VsockDevice::relay_open() const {
  return accepting_incoming() ||
         (VSOCKREF_FAULT(sibling_before_config_read) && reset_state_ == ResetState::AwaitConfigRead);
}

bool VsockDevice::tx_allowed() const {
  return reset_state_ != ResetState::Pending || VSOCKREF_FAULT(rx_before_transport_reset);
}

// ---- lifecycle ----

void VsockDevice::reset() {
  for (auto& [id, c] : conns_)
    if (c->host) loop_.remove(c->host.get());
  conns_.clear();
  by_key_.clear();
  work_.clear();
  ahead_due_.clear();
  ahead_storage_ = 0;
  rsts_.clear();
  relay_.clear();
  relay_bytes_ = 0;
  relay_credit_.clear();
  held_.clear();  // the host programs see EOF instead of OK
  if (event_ring_timer_) loop_.cancel_timer(event_ring_timer_);
  event_ring_timer_ = 0;
  if (!VSOCKREF_FAULT(reset_keeps_pending_transport_reset)) reset_state_ = ResetState::None;
  spurious_reset_spent_ = false;
}

DeviceState VsockDevice::save(uint64_t features, uint64_t protocol_features) const {
  DeviceState s;
  s.guest_cid = opts_.guest_cid;
  s.features = features;
  s.protocol_features = protocol_features;
  s.config = config();
  s.transport_reset_pending = reset_state_ != ResetState::None;
  return s;
}

void VsockDevice::loaded(const DeviceState&) {
  // Whatever the source had, the driver's connections did not survive the
  // move: it must hear TRANSPORT_RESET before anything else (README).
  reset();
  reset_state_ = ResetState::Pending;
  spurious_reset_spent_ = true;  // a load is owed its own event, and only that one
  if (VSOCKREF_FAULT(no_transport_reset)) reset_state_ = ResetState::None;
}

void VsockDevice::rings_changed() {
  if (reset_state_ != ResetState::Pending || VSOCKREF_FAULT(wait_for_event_ring)) return;
  // rx and tx run and the event ring has not been handed over. QEMU never
  // will (it keeps that queue and sends TRANSPORT_RESET itself); crosvm sets
  // the queues up one after another and hands it over a moment later. So the
  // device activates only if the event ring stays away for kEventRingGrace:
  // never inactive for good, and crosvm's restore still gets its event.
  if (io_.ring_started(vs::kEventQueue)) {
    if (event_ring_timer_) loop_.cancel_timer(event_ring_timer_);
    event_ring_timer_ = 0;
    return;
  }
  if (io_.ring_usable(vs::kRxQueue) && io_.ring_usable(vs::kTxQueue) && !event_ring_timer_)
    event_ring_timer_ = loop_.add_timer(VSOCKREF_FAULT(no_event_ring_grace) ? std::chrono::milliseconds(0) : kEventRingGrace, [this] {
      event_ring_timer_ = 0;
      activate_without_event_ring();
    });
}

void VsockDevice::activate_without_event_ring() {
  if (reset_state_ != ResetState::Pending || io_.ring_started(vs::kEventQueue)) return;
  if (!io_.ring_usable(vs::kRxQueue) || !io_.ring_usable(vs::kTxQueue)) return;
  VLOG(Info, "{}: rx and tx run and no event ring came within {} ms: the front-end owns TRANSPORT_RESET; device active",
       opts_.name, kEventRingGrace.count());
  reset_state_ = ResetState::None;
  admit_held();
  io_.request_processing();
}

void VsockDevice::config_read() {
  if (VSOCKREF_FAULT(activate_on_early_config_read) && reset_state_ == ResetState::Pending) {
    reset_state_ = ResetState::None;
    admit_held();
    return;
  }
  if (reset_state_ != ResetState::AwaitConfigRead) return;
  // virtio 5.10.6.6: the driver fetches guest_cid after TRANSPORT_RESET. A
  // read before the event was sent does not count (the race the seed left).
  VLOG(Info, "{}: config read after TRANSPORT_RESET: device active", opts_.name);
  reset_state_ = ResetState::None;
  admit_held();
}

void VsockDevice::admit_held() {
  auto held = std::move(held_);
  held_.clear();
  for (auto& h : held) host_connect(std::move(h.fd), h.guest_port);
}

// ---- the rings ----

void VsockDevice::process() {
  process_event();
  if (tx_allowed()) process_tx();
  if (rx_allowed()) process_rx();
}

void VsockDevice::process_event() {
  // The fault sends one TRANSPORT_RESET per device life without a load: the
  // cases that check for none fail on every run, and the others, which all
  // load, see what they would without it.
  const bool owed = reset_state_ == ResetState::Pending ||
                    (VSOCKREF_FAULT(spurious_transport_reset) && !spurious_reset_spent_);
  if (!owed || !io_.ring_usable(vs::kEventQueue)) return;
  auto c = io_.pop(vs::kEventQueue);
  if (!c && io_.rearm(vs::kEventQueue)) c = io_.pop(vs::kEventQueue);
  if (!c) return;  // delivered once a buffer arrives, never dropped
  if (c->writable_bytes < vs::kEventSize) {
    VLOG(Warn, "{}: event buffer {} has {} writable bytes, an event needs {}", opts_.name, c->head,
         c->writable_bytes, vs::kEventSize);
    io_.push(vs::kEventQueue, c->head, 0);
    return;
  }
  const auto ev = vs::encode_event(vs::kEventTransportReset);
  if (auto w = vhu::write_chain(io_.memory(), *c, 0, ev); !w) {
    VLOG(Warn, "{}: event buffer: {}", opts_.name, w.message());
    io_.push(vs::kEventQueue, c->head, 0);
    return;
  }
  io_.push(vs::kEventQueue, c->head, static_cast<uint32_t>(ev.size()));
  spurious_reset_spent_ = true;
  reset_state_ = ResetState::AwaitConfigRead;
  VLOG(Info, "{}: TRANSPORT_RESET sent; waiting for the driver to read the config", opts_.name);
  if (VSOCKREF_FAULT(connect_before_config_read)) admit_held();
}

void VsockDevice::process_tx() {
  while (io_.ring_usable(vs::kTxQueue)) {
    // "Eventually even the additional resources will be exhausted and further
    // processing is not possible until the other side processes the
    // virtqueue that it has neglected."
    if (rsts_.size() >= kMaxPendingRsts) break;
    if (VSOCKREF_FAULT(tx_waits_for_rx) && rx_starved_) break;
    auto c = io_.pop(vs::kTxQueue);
    if (!c) {
      if (io_.rearm(vs::kTxQueue)) continue;
      break;
    }
    handle_tx_chain(*c);
    io_.push(vs::kTxQueue, c->head, 0);
  }
}

namespace {
// For the tx_payload_in_one_descriptor fault: whether the `len` payload bytes
// after the header run on past the descriptor they start in.
bool payload_spans_descriptors(const vhu::Chain& c, uint32_t len) {
  uint64_t at = vs::kHdrSize;
  for (const auto& s : c.segments) {
    if (at < s.len) return len > s.len - at;
    at -= s.len;
  }
  return len > 0;
}
}  // namespace

void VsockDevice::handle_tx_chain(const vhu::Chain& c) {
  if (c.readable_bytes < vs::kHdrSize) {
    VLOG(Warn, "{}: tx chain {}: {} readable bytes, a packet header needs {}; dropped", opts_.name, c.head,
         c.readable_bytes, vs::kHdrSize);
    return;
  }
  std::array<uint8_t, vs::kHdrSize> raw;
  if (auto r = vhu::read_chain(io_.memory(), c, 0, raw); !r || *r != raw.size()) {
    VLOG(Warn, "{}: tx chain {}: header unreadable", opts_.name, c.head);
    return;
  }
  auto h = vs::decode(raw);
  if (!h) return;
  VLOG(Trace, "{}: tx {}", opts_.name, vs::describe(*h));
  if (h->len > c.readable_bytes - vs::kHdrSize && !VSOCKREF_FAULT(trust_vsock_hdr_len)) {
    VLOG(Warn, "{}: tx packet {}: field len = {} but the buffer holds {} payload bytes; dropped", opts_.name,
         vs::describe(*h), h->len, c.readable_bytes - vs::kHdrSize);
    return;
  }
  if (VSOCKREF_FAULT(tx_payload_in_one_descriptor) && payload_spans_descriptors(c, h->len)) {
    VLOG(Warn, "{}: tx packet {}: payload in more than one descriptor; dropped", opts_.name, vs::describe(*h));
    return;
  }
  if (h->src_cid != opts_.guest_cid && !VSOCKREF_FAULT(accept_spoofed_src_cid)) {
    VLOG(Warn, "{}: tx packet {}: field src_cid = {} is not the guest's CID {}; dropped", opts_.name,
         vs::describe(*h), h->src_cid, opts_.guest_cid);
    return;
  }
  if (h->dst_cid == vs::kHostCid) {
    handle_host_packet(*h, c);
    return;
  }
  if (VSOCKREF_FAULT(route_outside_groups)) {
    handle_host_packet(*h, c);
    return;
  }
  if (VsockDevice* sib = router_ ? router_->route(this, h->dst_cid) : nullptr) {
    handle_sibling_packet(sib, *h, c);
    return;
  }
  VLOG(Debug, "{}: tx packet {}: no route to CID {}", opts_.name, vs::describe(*h), h->dst_cid);
  if (h->op != op_of(Op::RST)) queue_rst_reply(*h);
}

void VsockDevice::handle_host_packet(const Hdr& h, const vhu::Chain& c) {
  const ConnKey key{vs::kHostCid, h.dst_port, h.src_port};
  Connection* conn = find(key);
  const bool is_rst = h.op == op_of(Op::RST);
  if (!type_ok(h.type) || (conn && conn->type != h.type)) {
    // "A VIRTIO_VSOCK_OP_RST reply MUST be sent if a packet is received with
    // an unknown type value" (and one not negotiated is unknown to us).
    VLOG(Debug, "{}: tx packet {}: field type = {} not supported", opts_.name, vs::describe(h), h.type);
    if (conn) destroy(*conn);
    if (!is_rst && !VSOCKREF_FAULT(no_rst_unknown_type)) queue_rst_reply(h);
    return;
  }
  if (!conn) {
    if (h.op == op_of(Op::REQUEST)) {
      guest_request(h);
    } else if ((!is_rst && !VSOCKREF_FAULT(no_rst_unknown_connection)) || VSOCKREF_FAULT(rst_an_rst)) {
      // Never answer an RST with an RST (INTEROP bug 14).
      queue_rst_reply(h);
    }
    return;
  }
  const uint32_t before = conn->guest.available();
  conn->guest.update(h.buf_alloc, h.fwd_cnt);
  if (conn->guest.available() != before) conn->credit_request_sent = false;
  switch (static_cast<Op>(h.op)) {
    case Op::RST:
      destroy(*conn);
      return;
    case Op::RESPONSE:
      if (conn->state != ConnState::Connecting) {
        abort_conn(*conn, "RESPONSE on an established connection");
        break;
      }
      conn->state = ConnState::Established;
      {
        // The host program reads "OK <host port>\n" before any data.
        const std::string ok = format_ok_line(conn->key.peer_port);
        if (::send(conn->host.get(), ok.data(), ok.size(), MSG_DONTWAIT | MSG_NOSIGNAL) !=
            static_cast<ssize_t>(ok.size())) {
          abort_conn(*conn, "could not write OK to the host program");
          break;
        }
      }
      break;
    case Op::RW:
      guest_rw(*conn, h, c);
      break;
    case Op::SHUTDOWN:
      guest_shutdown(*conn, h.flags);
      break;
    case Op::CREDIT_UPDATE:
      break;
    case Op::CREDIT_REQUEST:
      if (!VSOCKREF_FAULT(ignore_credit_request)) conn->want_credit_update = true;
      break;
    case Op::REQUEST:
    default:
      abort_conn(*conn, fmt::format("unexpected op {}", vs::op_name(h.op)));
      break;
  }
  if ((conn = find(key))) {
    update_interest(*conn);
    schedule(*conn);
  }
}

void VsockDevice::guest_request(const Hdr& h) {
  if (conns_.size() >= kMaxConnections) {
    VLOG(Warn, "{}: REQUEST to port {} refused: {} connections open", opts_.name, h.dst_port, conns_.size());
    queue_rst_reply(h);
    return;
  }
  const std::string path = fmt::format("{}_{}", opts_.uds_path, h.dst_port);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (opts_.uds_path.empty() || path.size() >= sizeof addr.sun_path) {
    queue_rst_reply(h);
    return;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int stype = h.type == vs::kTypeSeqpacket ? SOCK_SEQPACKET : SOCK_STREAM;
  vhu::UniqueFd fd(::socket(AF_UNIX, stype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    VLOG(Debug, "{}: REQUEST to host port {}: connect {}: {}", opts_.name, h.dst_port, path, std::strerror(errno));
    if (!VSOCKREF_FAULT(no_rst_closed_port)) queue_rst_reply(h);
    return;
  }
  if (stype == SOCK_SEQPACKET) pass_credentials(fd.get());
  Connection& conn = create(ConnKey{vs::kHostCid, h.dst_port, h.src_port}, h.type, std::move(fd));
  conn.state = ConnState::Established;
  conn.guest.update(h.buf_alloc, h.fwd_cnt);
  conn.want_response = true;
  update_interest(conn);
  schedule(conn);
  VLOG(Debug, "{}: guest port {} connected to host port {}", opts_.name, h.src_port, h.dst_port);
}

void VsockDevice::guest_rw(Connection& conn, const Hdr& h, const vhu::Chain& c) {
  if (conn.state != ConnState::Established || conn.guest_no_more_send) {
    abort_conn(conn, "RW before RESPONSE or after SHUTDOWN(SEND)");
    return;
  }
  if (!conn.local.can_accept(h.len) && !VSOCKREF_FAULT(unbounded_tx_buffer)) {
    abort_conn(conn, fmt::format("RW of {} bytes exceeds the credit we gave ({} of {} buffered)", h.len,
                                 conn.local.buffered(), conn.local.buf_alloc));
    return;
  }
  if (VSOCKREF_FAULT(trust_vsock_hdr_len) && h.len > c.readable_bytes - vs::kHdrSize) {
    // Reads hdr.len bytes on from the header, as if the first buffer held them all.
    if (auto p = io_.memory().gpa_to_host(c.segments[0].gpa + vs::kHdrSize, h.len); p.ok() && conn.host)
      (void)::send(conn.host.get(), *p, h.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    return;
  }
  // Fault corrupt_stream_at_64k: where stream byte 65536 falls in this packet, if it does.
  const uint32_t corrupt_at = 65536 - conn.local.rx_cnt;
  const bool corrupt = VSOCKREF_FAULT(corrupt_stream_at_64k) && corrupt_at < h.len;
  conn.local.rx_cnt += h.len;
  if (h.len == 0 && !(conn.type == vs::kTypeSeqpacket && (h.flags & vs::kSeqEom))) return;
  size_t sent = 0;
  if (conn.type == vs::kTypeStream && conn.out_bytes() == 0 && conn.host && !corrupt) {
    // Straight from guest memory to the host socket; only what the socket
    // does not take now is copied into the connection's buffer.
    std::vector<iovec> iov;
    auto n = chain_iovecs(io_.memory(), c, false, vs::kHdrSize, h.len, iov);
    if (n && *n == h.len && iov.size() <= IOV_MAX) {
      msghdr mh{};
      mh.msg_iov = iov.data();
      mh.msg_iovlen = iov.size();
      const ssize_t w = ::sendmsg(conn.host.get(), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) sent = static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) {
        abort_conn(conn, fmt::format("write to the host program: {}", std::strerror(errno)));
        return;
      }
      conn.local.fwd_cnt += static_cast<uint32_t>(sent);
    }
  }
  if (sent < h.len) {
    const size_t rest = h.len - sent;
    const size_t at = conn.out.size();
    conn.out.resize(at + rest);
    auto r = vhu::read_chain(io_.memory(), c, vs::kHdrSize + sent, std::span<uint8_t>(conn.out.data() + at, rest));
    if (!r || *r != rest) {
      abort_conn(conn, "payload unreadable");
      return;
    }
    if (corrupt) conn.out[at + corrupt_at] ^= 0xff;
  }
  if (conn.type == vs::kTypeSeqpacket) {
    conn.out_partial += h.len;
    if (h.flags & vs::kSeqEom) {
      conn.out_msgs.push_back(conn.out_partial);
      conn.out_partial = 0;
    }
  }
  flush_out(conn);
  if (conn.local.update_due() && !VSOCKREF_FAULT(no_credit_update)) conn.want_credit_update = true;
}

void VsockDevice::guest_shutdown(Connection& conn, uint32_t flags) {
  if (VSOCKREF_FAULT(ignore_guest_shutdown)) return;
  if (flags & vs::kShutdownRcv) conn.guest_no_more_rcv = true;
  if (flags & vs::kShutdownSend) conn.guest_no_more_send = true;
  if (conn.guest_no_more_rcv && conn.guest_no_more_send) {
    // The guest is closing: pass on what it sent, then confirm with RST.
    conn.close_after_flush = true;
    flush_out(conn);
    return;
  }
  if (conn.guest_no_more_send && conn.out_drained() && conn.host) ::shutdown(conn.host.get(), SHUT_WR);
}

void VsockDevice::handle_sibling_packet(VsockDevice* sib, const Hdr& h, const vhu::Chain& c) {
  const bool is_rst = h.op == op_of(Op::RST);
  if (!type_ok(h.type)) {
    if (!is_rst) queue_rst_reply(h);
    return;
  }
  if (h.len > kMaxPayload * 4 || sib->relay_.size() >= kMaxRelayPackets ||
      sib->relay_bytes_ + h.len > kMaxRelayBytes) {
    VLOG(Warn, "{}: relay to CID {} full; {} refused", opts_.name, h.dst_cid, vs::describe(h));
    if (!is_rst) queue_rst_reply(h);
    return;
  }
  RelayPacket p{h, std::vector<uint8_t>(h.len)};
  if (auto r = vhu::read_chain(io_.memory(), c, vs::kHdrSize, p.payload); !r || *r != h.len) return;
  note_guest_to_sibling(h);
  sib->relay_in(std::move(p));
}

void VsockDevice::note_guest_to_sibling(const Hdr& h) {
  const ConnKey key{h.dst_cid, h.dst_port, h.src_port};
  if (h.op == op_of(Op::RST)) {
    relay_credit_.erase(key);
    return;
  }
  auto it = relay_credit_.find(key);
  if (it == relay_credit_.end()) {
    if (relay_credit_.size() >= kMaxRelayFlows) return;
    it = relay_credit_.emplace(key, PeerCredit{}).first;
    // Counting from what the guest has consumed: a flow first seen late is
    // metered from here on.
    it->second.tx_cnt = h.fwd_cnt;
  }
  // Packets held for the flow go in the rx pass that follows this tx pass.
  it->second.update(h.buf_alloc, h.fwd_cnt);
}

std::deque<RelayPacket>::iterator VsockDevice::next_relay() {
  // In order within a flow; a flow whose guest holds its share of packets
  // waits, and the flows queued behind it do not.
  std::vector<ConnKey> waiting;
  for (auto it = relay_.begin(); it != relay_.end(); ++it) {
    const ConnKey key = relay_key(it->hdr);
    if (std::find(waiting.begin(), waiting.end(), key) != waiting.end()) continue;
    if (it->hdr.op == op_of(Op::RW)) {
      auto c = relay_credit_.find(key);
      if (c != relay_credit_.end() && c->second.packets_left() == 0) {
        waiting.push_back(key);
        continue;
      }
    }
    return it;
  }
  return relay_.end();
}

void VsockDevice::relay_in(RelayPacket p) {
  relay_bytes_ += p.payload.size();
  relay_.push_back(std::move(p));
  io_.request_processing();
}

// ---- rx ----

namespace {
// The flow still moves host bytes to the guest (sent now, or read ahead).
bool takes_host_data(const Connection& c) {
  return c.state == ConnState::Established && c.host && !c.guest_no_more_rcv && !c.want_rst;
}
// STREAM host bytes wait for the guest: in the socket, or read ahead.
bool host_bytes_waiting(const Connection& c) { return c.host_readable || !c.ahead.empty(); }
bool data_ready(const Connection& c) {
  if (!takes_host_data(c)) return false;
  if (c.in_msg_valid) return c.guest.available() > 0 || VSOCKREF_FAULT(exceed_credit);
  return host_bytes_waiting(c) && (c.guest.available() > 0 || VSOCKREF_FAULT(exceed_credit));
}
bool credit_request_due(const Connection& c) {
  return takes_host_data(c) && host_bytes_waiting(c) && c.guest.available() == 0 && !c.credit_request_sent;
}
bool has_packet(const Connection& c) {
  return c.want_rst || c.want_request || c.want_response || c.want_credit_update || c.want_shutdown != 0 ||
         data_ready(c) || credit_request_due(c);
}
}  // namespace

bool VsockDevice::have_rx_work() {
  if (!rsts_.empty()) return true;
  if (relay_open() && next_relay() != relay_.end()) return true;
  while (!work_.empty()) {
    Connection* c = nullptr;
    if (auto it = conns_.find(work_.front()); it != conns_.end()) c = it->second.get();
    if (c && has_packet(*c)) return true;
    if (c) c->in_work = false;
    work_.pop_front();
  }
  return false;
}

std::optional<vhu::Chain> VsockDevice::pop_rx() {
  auto c = io_.pop(vs::kRxQueue);
  if (c && VSOCKREF_FAULT(rx_first_descriptor_only) && c->segments.size() > 1) {
    c->segments.resize(1);
    c->writable_bytes = c->segments[0].writable ? c->segments[0].len : 0;
  }
  return c;
}

void VsockDevice::process_rx() {
  if (VSOCKREF_FAULT(stall_on_unready_rx) && !io_.ring_started(vs::kRxQueue) && have_rx_work()) {
    // rust-vmm/vhost-device #827: waiting inside the loop for a ring only the loop could start.
    std::this_thread::sleep_for(std::chrono::seconds(3));
  }
  while (io_.ring_usable(vs::kRxQueue) && have_rx_work()) {
    auto c = pop_rx();
    rx_starved_ = !c;
    if (!c) {
      if (io_.rearm(vs::kRxQueue)) continue;
      break;
    }
    if (c->writable_bytes < vs::kHdrSize && !VSOCKREF_FAULT(write_past_rx_buffer)) {
      VLOG(Warn, "{}: rx buffer {} has {} writable bytes, a packet header needs {}; returned empty", opts_.name,
           c->head, c->writable_bytes, vs::kHdrSize);
      io_.push(vs::kRxQueue, c->head, 0);
      continue;
    }
    io_.push(vs::kRxQueue, c->head, fill_rx(*c));
    // Further buffers fill_data() filled from the same read, in stream order.
    for (const RxFill& f : rx_batch_) io_.push(vs::kRxQueue, f.chain.head, f.written);
    rx_batch_.clear();
  }
}

uint32_t VsockDevice::write_packet(const vhu::Chain& c, const Hdr& h) {
  VLOG(Trace, "{}: rx {}", opts_.name, vs::describe(h));
  const auto bytes = vs::encode(h);
  if (VSOCKREF_FAULT(write_past_rx_buffer) && !c.segments.empty()) {
    // Trusts the first descriptor to be a writable buffer big enough for a header.
    if (auto p = io_.memory().gpa_to_host(c.segments[0].gpa, bytes.size()); p.ok())
      std::memcpy(*p, bytes.data(), bytes.size());
    return static_cast<uint32_t>(vs::kHdrSize);
  }
  auto w = vhu::write_chain(io_.memory(), c, 0, bytes);
  if (!w) {
    VLOG(Warn, "{}: rx buffer {}: {}", opts_.name, c.head, w.message());
    return 0;
  }
  // write_chain() stops where the chain ends. A buffer gathered for a batch
  // read may be shorter than a header; it goes back empty, as process_rx()
  // returns one, never with a used length beyond what it has.
  if (*w < bytes.size() && !VSOCKREF_FAULT(small_rx_buffer_claims_header)) {
    VLOG(Warn, "{}: rx buffer {} has {} writable bytes, a packet header needs {}; returned empty", opts_.name, c.head,
         *w, vs::kHdrSize);
    return 0;
  }
  return static_cast<uint32_t>(vs::kHdrSize);
}

uint32_t VsockDevice::fill_rx(const vhu::Chain& c) {
  if (!rsts_.empty()) {
    const Hdr h = rsts_.front();
    rsts_.pop_front();
    return write_packet(c, h);
  }
  if (auto at = relay_open() ? next_relay() : relay_.end(); at != relay_.end()) {
    RelayPacket& p = *at;
    const ConnKey key = relay_key(p.hdr);
    // The sibling's packet may be bigger than our guest's rx buffers: cut it,
    // keeping EOM/EOR on the last piece only.
    const uint64_t room = c.writable_bytes - vs::kHdrSize;
    const uint32_t chunk = static_cast<uint32_t>(std::min<uint64_t>(p.payload.size(), room));
    Hdr h = p.hdr;
    h.len = chunk;
    const bool last = chunk == p.payload.size();
    if (!last) h.flags &= ~(vs::kSeqEom | vs::kSeqEor);
    uint32_t n = write_packet(c, h);
    if (n && chunk) {
      auto w = vhu::write_chain(io_.memory(), c, vs::kHdrSize, std::span<const uint8_t>(p.payload.data(), chunk));
      if (w) n += static_cast<uint32_t>(*w);
    }
    relay_bytes_ -= chunk;
    if (auto m = relay_credit_.find(key); m != relay_credit_.end()) {
      if (h.op == op_of(Op::RW)) m->second.sent(chunk);
      if (h.op == op_of(Op::RST)) relay_credit_.erase(m);
    }
    if (last) {
      relay_.erase(at);
    } else {
      p.payload.erase(p.payload.begin(), p.payload.begin() + chunk);
      p.hdr.len -= chunk;
    }
    return n;
  }
  const uint64_t id = work_.front();
  work_.pop_front();
  Connection& conn = *conns_.at(id);
  conn.in_work = false;
  const uint32_t n = fill_conn(conn, c);
  if (auto it = conns_.find(id); it != conns_.end() && has_packet(*it->second)) schedule(*it->second);
  return n;
}

Hdr VsockDevice::reply_hdr(Connection& conn, Op op, uint32_t flags, uint32_t len) {
  Hdr h;
  h.src_cid = conn.key.peer_cid;
  h.dst_cid = opts_.guest_cid;
  h.src_port = conn.key.peer_port;
  h.dst_port = conn.key.guest_port;
  h.len = len;
  h.type = conn.type;
  h.op = op_of(op);
  h.flags = flags;
  // Every packet carries our credit, so every packet is a credit update.
  h.buf_alloc = conn.local.buf_alloc;
  h.fwd_cnt = conn.local.fwd_cnt + (VSOCKREF_FAULT(wrong_fwd_cnt) ? 4096u : 0u);
  conn.local.reported_fwd = conn.local.fwd_cnt;
  return h;
}

uint32_t VsockDevice::fill_conn(Connection& conn, const vhu::Chain& c) {
  if (conn.want_rst) {
    const Hdr h = reply_hdr(conn, Op::RST);
    destroy(conn);
    return write_packet(c, h);
  }
  if (conn.want_request) {
    conn.want_request = false;
    if (VSOCKREF_FAULT(credit_update_before_response)) conn.want_credit_update = true;
    return write_packet(c, reply_hdr(conn, Op::REQUEST));
  }
  if (conn.want_response) {
    conn.want_response = false;
    return write_packet(c, reply_hdr(conn, Op::RESPONSE));
  }
  if (conn.want_credit_update) {
    conn.want_credit_update = false;
    return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  }
  if (data_ready(conn)) return fill_data(conn, c);
  if (credit_request_due(conn)) {
    conn.credit_request_sent = true;
    note_stalled(conn);  // the socket may hold only its end, or nothing
    return write_packet(c, reply_hdr(conn, Op::CREDIT_REQUEST));
  }
  if (conn.want_shutdown) {
    const uint32_t f = conn.want_shutdown;
    conn.want_shutdown = 0;
    return write_packet(c, reply_hdr(conn, Op::SHUTDOWN, f));
  }
  // have_rx_work() said there was a packet; a credit update is always valid.
  return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
}

uint32_t VsockDevice::fill_data(Connection& conn, const vhu::Chain& c) {
  uint64_t room = std::min<uint64_t>(c.writable_bytes - vs::kHdrSize, kMaxPayload);
  if (!VSOCKREF_FAULT(exceed_credit)) room = std::min<uint64_t>(room, conn.guest.available());
  if (conn.type == vs::kTypeSeqpacket) return fill_seqpacket(conn, c, room);
  if (!conn.ahead.empty()) return fill_from_ahead(conn, c, room);

  std::vector<iovec> iov;
  auto n = chain_iovecs(io_.memory(), c, true, vs::kHdrSize, room, iov);
  if (!n || iov.size() > IOV_MAX) {
    VLOG(Warn, "{}: rx buffer {} unusable for data", opts_.name, c.head);
    return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  }
  const uint64_t want = VSOCKREF_FAULT(exceed_credit) ? kMaxPayload
                                                      : std::min<uint64_t>(kMaxPayload, conn.guest.available());
  // Bytes the socket held when more buffers were gathered; 0 when not asked.
  const uint64_t queued = *n == room && room < want ? gather_rx(conn, want - room, iov) : 0;
  uint64_t asked = *n;
  for (const RxFill& f : rx_batch_) asked += f.room;
  if (asked == 0) {
    // Buffers with room for a header only: a read into no bytes returns 0,
    // which would pass for the host's end of stream. Credit, not data.
    for (RxFill& f : rx_batch_)
      f.written = f.header_fits ? write_packet(f.chain, reply_hdr(conn, Op::CREDIT_UPDATE)) : 0;
    return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  }
  msghdr mh{};
  mh.msg_iov = iov.data();
  mh.msg_iovlen = iov.size();
  const ssize_t r = ::recvmsg(conn.host.get(), &mh, MSG_DONTWAIT);
  if (r > 0) {
    const auto got = static_cast<uint32_t>(r);
    corrupt_at_64k(conn, iov.data(), iov.size(), got);
    const auto first = static_cast<uint32_t>(std::min<uint64_t>(got, *n));
    if (first) conn.guest.sent(first);
    uint32_t rest = got - first;
    for (RxFill& f : rx_batch_) {
      const uint32_t len = std::min(rest, f.room);
      rest -= len;
      // A buffer the read did not reach (or with no room for data) still
      // carries a packet: the guest gets a header in every buffer it gave
      // that can hold one.
      if (!f.header_fits) {
        f.written = 0;
      } else if (len) {
        conn.guest.sent(len);
        f.written = write_packet(f.chain, reply_hdr(conn, Op::RW, 0, len)) + len;
      } else {
        f.written = write_packet(f.chain, reply_hdr(conn, Op::CREDIT_UPDATE));
      }
    }
    // A short read, or one that took all the socket held, means it is
    // drained: wait for epoll again rather than read it once more for nothing.
    // After a full read that spent the last of the credit, the socket's size
    // not known, ask it, so that a CREDIT_REQUEST goes out only for bytes
    // that are there (one ioctl per credit window, none while credit lasts).
    if (got < asked || (queued && got >= queued) ||
        (!queued && conn.guest.available() == 0 && socket_queued(conn.host.get()) == 0))
      conn.host_readable = false;
    update_interest(conn);
    note_stalled(conn);
    if (first == 0) return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));  // a header-only buffer
    return write_packet(c, reply_hdr(conn, Op::RW, 0, first)) + first;
  }
  // The socket held bytes for them a moment ago (we are its only reader, so
  // this does not happen); should it, they go back empty.
  for (RxFill& f : rx_batch_) f.written = 0;
  if (r == 0) {
    // End of the host's stream. A half-close (SHUT_WR) keeps the other
    // direction open; a full close (HUP) ends both.
    conn.host_eof = true;
    conn.host_readable = false;
    update_interest(conn);
    return write_host_end(conn, c);
  }
  if (errno == EAGAIN || errno == EINTR) {
    conn.host_readable = false;
    update_interest(conn);
    return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  }
  VLOG(Debug, "{}: host socket of guest port {}: {}", opts_.name, conn.key.guest_port, std::strerror(errno));
  const Hdr h = reply_hdr(conn, Op::RST);
  destroy(conn);
  return write_packet(c, h);
}

uint32_t VsockDevice::write_host_end(Connection& conn, const vhu::Chain& c) {
  // The fault still fills the buffer it took, with a packet that says nothing.
  if (VSOCKREF_FAULT(no_shutdown_to_guest)) return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  return write_packet(c, reply_hdr(conn, Op::SHUTDOWN, host_end_flags(conn)));
}

uint32_t VsockDevice::fill_from_ahead(Connection& conn, const vhu::Chain& c, uint64_t room) {
  iovec piece[2]{};
  const int k = conn.ahead.data_iov(room, piece);
  uint64_t len = 0;
  for (int i = 0; i < k; ++i) len += piece[i].iov_len;
  // A buffer with room for a header only: credit, not an RW without payload.
  if (len == 0) return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  corrupt_at_64k(conn, piece, static_cast<size_t>(k), len);
  uint64_t at = vs::kHdrSize;
  for (int i = 0; i < k; ++i) {
    auto w = vhu::write_chain(io_.memory(), c, at, {static_cast<const uint8_t*>(piece[i].iov_base), piece[i].iov_len});
    if (!w) {
      VLOG(Warn, "{}: rx buffer {}: {}", opts_.name, c.head, w.message());
      return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
    }
    at += *w;
  }
  conn.ahead.consume(len);
  conn.guest.sent(static_cast<uint32_t>(len));
  note_stalled(conn);
  return write_packet(c, reply_hdr(conn, Op::RW, 0, static_cast<uint32_t>(len))) + static_cast<uint32_t>(len);
}

void VsockDevice::note_stalled(Connection& conn) {
  if (conn.ahead_due || conn.ahead.capacity() == 0 || conn.guest.available() > 0) return;
  conn.ahead_due = true;
  ahead_due_.push_back(conn.id);
}

void VsockDevice::read_ahead() {
  // Only while rx runs: a stopped device leaves host data in the host's socket
  // (and the host program blocked), as it did before reading ahead. The list
  // waits, one entry per flow, for the first pass once rx runs again.
  if (!io_.ring_usable(vs::kRxQueue)) return;
  for (uint64_t id : ahead_due_) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    it->second->ahead_due = false;
    read_ahead(*it->second);
  }
  ahead_due_.clear();
}

void VsockDevice::read_ahead(Connection& conn) {
  if (!takes_host_data(conn) || !conn.host_readable || conn.guest.available() > 0 || conn.ahead.space() == 0) return;
  // Only bytes the socket holds: a read that returned 0, the host's end of
  // stream, must reach the guest after the bytes read ahead. With none read
  // ahead, end_of_stream_check() looks for the end; otherwise fill_data()
  // meets it once they are sent.
  const int queued = socket_queued(conn.host.get());
  if (queued < 0) return;
  if (queued == 0) {
    if (conn.ahead.empty()) end_of_stream_check(conn);
    return;
  }
  if (!conn.ahead.allocated()) {
    if (ahead_storage_ + conn.ahead.capacity() > kReadAheadTotal) return;
    ahead_storage_ += conn.ahead.capacity();
  }
  iovec v[2]{};
  msghdr mh{};
  mh.msg_iov = v;
  mh.msg_iovlen = static_cast<size_t>(conn.ahead.free_iov(static_cast<size_t>(queued), v));
  const ssize_t r = ::recvmsg(conn.host.get(), &mh, MSG_DONTWAIT);
  if (r <= 0) return;  // errors too are fill_data()'s, in stream order
  conn.ahead.commit(static_cast<size_t>(r));
  if (r >= queued) {
    conn.host_readable = false;
    update_interest(conn);
  }
}

// Epoll said the socket of a flow out of credit was readable, and it holds no
// bytes: the host's end of stream, or a report that has gone stale. The end is
// told at once, since SHUTDOWN takes no credit; waiting for the next read
// would hold it until the guest returned credit it may have no reason to
// return. A stale word is dropped, so no CREDIT_REQUEST asks for credit that
// nothing would use.
void VsockDevice::end_of_stream_check(Connection& conn) {
  uint8_t probe;
  const ssize_t r = ::recv(conn.host.get(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r > 0) return;  // bytes arrived meanwhile: read_ahead() or fill_data() takes them
  if (r < 0 && errno != EAGAIN && errno != EINTR) return;  // fill_data() meets the error in order
  conn.host_readable = false;
  if (r == 0) {
    conn.host_eof = true;
    if (!VSOCKREF_FAULT(no_shutdown_to_guest))
      conn.want_shutdown |= host_end_flags(conn);
    schedule(conn);
    io_.request_processing();
  }
  update_interest(conn);
}

// Linux posts rx buffers of 4 KiB: filling as many as one read can, with one
// recvmsg, saves a system call per buffer. A buffer taken from the ring cannot
// be given back unused, so only as many are taken as the socket holds bytes
// for (we are its only reader, so those bytes stay until we read them).
uint64_t VsockDevice::gather_rx(Connection& conn, uint64_t more, std::vector<iovec>& iov) {
  const int queued = socket_queued(conn.host.get());
  if (queued <= 0) return 0;
  // The first buffer's room is already in `iov`.
  uint64_t first = 0;
  for (const iovec& v : iov) first += v.iov_len;
  if (static_cast<uint64_t>(queued) <= first) return static_cast<uint64_t>(queued);
  more = std::min<uint64_t>(more, static_cast<uint64_t>(queued) - first);
  // Each buffer is a packet of its own, within the guest's share (credit.h).
  while (more > 0 && rx_batch_.size() < kMaxRxBatch && rx_batch_.size() + 1 < conn.guest.packets_left() &&
         io_.ring_usable(vs::kRxQueue)) {
    auto c = pop_rx();
    if (!c) break;
    const size_t at = iov.size();
    vhu::Result<uint64_t> n = uint64_t{0};
    if (c->writable_bytes > vs::kHdrSize) n = chain_iovecs(io_.memory(), *c, true, vs::kHdrSize, more, iov);
    if (!n || *n == 0 || iov.size() > IOV_MAX) {
      // No data goes here, and the batch ends: in order, it gets a header
      // only, or nothing when a header does not fit, as process_rx() does.
      iov.resize(at);
      const bool header_fits = c->writable_bytes >= vs::kHdrSize || VSOCKREF_FAULT(small_rx_buffer_claims_header);
      rx_batch_.push_back(RxFill{std::move(*c), 0, 0, header_fits});
      break;
    }
    rx_batch_.push_back(RxFill{std::move(*c), static_cast<uint32_t>(*n), 0, true});
    more -= *n;
  }
  return static_cast<uint64_t>(queued);
}

uint32_t VsockDevice::fill_seqpacket(Connection& conn, const vhu::Chain& c, uint64_t room) {
  if (!conn.in_msg_valid) {
    // One host message at a time: its size first, so the whole of it is read.
    uint8_t probe;
    const ssize_t len = ::recv(conn.host.get(), &probe, 1, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
    if ((len == 0 && peer_has_shut_down(conn.host.get())) || (len < 0 && errno != EAGAIN && errno != EINTR)) {
      conn.host_eof = true;
      conn.host_readable = false;
      update_interest(conn);
      if (len < 0) {
        const Hdr h = reply_hdr(conn, Op::RST);
        destroy(conn);
        return write_packet(c, h);
      }
      return write_host_end(conn, c);
    }
    if (len < 0) {
      conn.host_readable = false;
      update_interest(conn);
      return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
    }
    if (static_cast<size_t>(len) > kMaxSeqMessage || static_cast<size_t>(len) > conn.guest.buf_alloc) {
      VLOG(Warn, "{}: host SEQPACKET message of {} bytes exceeds what guest port {} can take ({})", opts_.name, len,
           conn.key.guest_port, conn.guest.buf_alloc);
      const Hdr h = reply_hdr(conn, Op::RST);
      destroy(conn);
      return write_packet(c, h);
    }
    conn.in_msg.resize(static_cast<size_t>(len));
    const ssize_t got = ::recv(conn.host.get(), conn.in_msg.data(), conn.in_msg.size(), MSG_DONTWAIT);
    if (got != len) {
      const Hdr h = reply_hdr(conn, Op::RST);
      destroy(conn);
      return write_packet(c, h);
    }
    conn.in_off = 0;
    conn.in_msg_valid = true;
    room = std::min<uint64_t>(room, conn.in_msg.size());
  }
  const size_t left = conn.in_msg.size() - conn.in_off;
  const auto chunk = static_cast<uint32_t>(std::min<uint64_t>(room, left));
  const bool last = chunk == left;
  if (!chunk && !last) return write_packet(c, reply_hdr(conn, Op::CREDIT_UPDATE));
  const bool eom = last && !VSOCKREF_FAULT(seqpacket_no_eom);
  Hdr h = reply_hdr(conn, Op::RW, eom ? vs::kSeqEom | vs::kSeqEor : 0, chunk);
  uint32_t n = write_packet(c, h);
  if (n && chunk) {
    auto w = vhu::write_chain(io_.memory(), c, vs::kHdrSize,
                              std::span<const uint8_t>(conn.in_msg.data() + conn.in_off, chunk));
    if (w) n += static_cast<uint32_t>(*w);
  }
  conn.guest.sent(chunk);
  conn.in_off += chunk;
  if (last) {
    conn.in_msg_valid = false;
    conn.in_msg.clear();
    // Whether another message waits, asked now: else the next round would
    // take an rx buffer to find out, and fill it with a CREDIT_UPDATE. A
    // zero-length message or the end reads as 0 and is the probe's, above.
    uint8_t probe;
    if (::recv(conn.host.get(), &probe, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN)
      conn.host_readable = false;
    update_interest(conn);
  }
  return n;
}

// ---- connections ----

Connection* VsockDevice::find(const ConnKey& k) {
  auto it = by_key_.find(k);
  if (it == by_key_.end()) return nullptr;
  return conns_.at(it->second).get();
}

Connection& VsockDevice::create(const ConnKey& k, uint16_t type, vhu::UniqueFd host) {
  auto conn = std::make_unique<Connection>();
  conn->id = next_id_++;
  conn->key = k;
  conn->type = type;
  conn->host = std::move(host);
  conn->local.buf_alloc = opts_.tx_buffer_size;
  if (type == vs::kTypeStream) conn->ahead = ByteRing(kReadAhead);
  const uint64_t id = conn->id;
  if (conn->host) {
    set_nonblocking(conn->host.get());
    if (auto r = loop_.add(conn->host.get(), 0, [this, id](uint32_t ev) { on_host_event(id, ev); }); !r)
      VLOG(Warn, "{}: {}", opts_.name, r.message());
  }
  Connection& ref = *conn;
  by_key_[k] = id;
  conns_[id] = std::move(conn);
  return ref;
}

void VsockDevice::destroy(Connection& conn) {
  if (conn.host) loop_.remove(conn.host.get());
  if (conn.ahead.allocated()) ahead_storage_ -= conn.ahead.capacity();
  by_key_.erase(conn.key);
  conns_.erase(conn.id);  // `conn` dangles from here
}

void VsockDevice::abort_conn(Connection& conn, const std::string& why) {
  VLOG(Debug, "{}: resetting guest port {} <-> {}:{}: {}", opts_.name, conn.key.guest_port, conn.key.peer_cid,
       conn.key.peer_port, why);
  // The host program sees the end at once; the guest hears RST next.
  if (conn.host) loop_.remove(conn.host.get());
  conn.host.reset();
  conn.out.clear();
  conn.out_head = 0;
  conn.want_request = conn.want_response = conn.want_credit_update = false;
  conn.want_shutdown = 0;
  conn.want_rst = true;
  schedule(conn);
}

void VsockDevice::schedule(Connection& conn) {
  if (conn.in_work) return;
  conn.in_work = true;
  work_.push_back(conn.id);
}

void VsockDevice::queue_rst_reply(const Hdr& from_guest) {
  if (rsts_.size() >= kMaxPendingRsts) {
    VLOG(Warn, "{}: RST for {} dropped: {} already queued", opts_.name, vs::describe(from_guest), rsts_.size());
    return;
  }
  Hdr r;
  r.src_cid = from_guest.dst_cid;
  r.dst_cid = from_guest.src_cid;
  r.src_port = from_guest.dst_port;
  r.dst_port = from_guest.src_port;
  r.type = from_guest.type;
  r.op = op_of(Op::RST);
  rsts_.push_back(r);
}

void VsockDevice::update_interest(Connection& conn) {
  if (!conn.host || conn.host_hup) return;
  uint32_t ev = 0;
  if (conn.state == ConnState::Established && !conn.host_readable && !conn.host_eof && !conn.in_msg_valid &&
      !conn.guest_no_more_rcv)
    ev |= EPOLLIN;
  if (conn.out_ready()) ev |= EPOLLOUT;
  if (ev != conn.interest) {
    loop_.modify(conn.host.get(), ev);
    conn.interest = ev;
  }
}

void VsockDevice::on_host_event(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Connection& conn = *it->second;
  if (events & (EPOLLHUP | EPOLLERR)) {
    // Always reported, whatever we asked for: stop watching and read what is
    // left until EOF instead.
    conn.host_hup = true;
    loop_.remove(conn.host.get());
    conn.interest = 0;
    if (conn.state == ConnState::Connecting) {
      abort_conn(conn, "the host program went away before the guest answered");
    } else {
      if (!conn.host_eof) {
        conn.host_readable = true;
      } else if (!VSOCKREF_FAULT(no_shutdown_to_guest)) {
        // Its end of stream was told (SEND); now it will read no more either.
        conn.want_shutdown |= vs::kShutdownSend | vs::kShutdownRcv;
      }
      note_stalled(conn);
      flush_out(conn);
    }
  } else {
    if (events & EPOLLIN) {
      conn.host_readable = true;
      note_stalled(conn);
    }
    if (events & EPOLLOUT) flush_out(conn);
  }
  if ((it = conns_.find(id)) != conns_.end()) {
    update_interest(*it->second);
    schedule(*it->second);
  }
  io_.request_processing();
}

void VsockDevice::flush_out(Connection& conn) {
  // A SEQPACKET message of no bytes is still a message to pass on.
  while (conn.host && conn.out_ready()) {
    const size_t len = conn.type == vs::kTypeSeqpacket ? conn.out_msgs.front() : conn.out_bytes();
    const ssize_t w = ::send(conn.host.get(), conn.out.data() + conn.out_head, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) break;
    if (w < 0 || (w == 0 && len > 0)) {
      abort_conn(conn, fmt::format("write to the host program: {}", std::strerror(errno)));
      return;
    }
    conn.out_head += static_cast<size_t>(w);
    conn.local.fwd_cnt += static_cast<uint32_t>(w);
    if (conn.type == vs::kTypeSeqpacket) conn.out_msgs.pop_front();
  }
  if (conn.out_bytes() == 0) {
    conn.out.clear();
    conn.out_head = 0;
  } else if (conn.out_head > conn.out.size() / 2) {
    // Keep the buffer compact without moving bytes on every partial write.
    conn.out.erase(conn.out.begin(), conn.out.begin() + static_cast<ptrdiff_t>(conn.out_head));
    conn.out_head = 0;
  }
  if (conn.out_drained()) {
    if (conn.close_after_flush) {
      abort_conn(conn, "guest closed");
      return;
    }
    if (conn.guest_no_more_send && conn.host) ::shutdown(conn.host.get(), SHUT_WR);
  }
  if (conn.local.update_due() && !VSOCKREF_FAULT(no_credit_update)) {
    conn.want_credit_update = true;
    schedule(conn);
  }
}

uint32_t VsockDevice::alloc_host_port(uint32_t guest_port) {
  for (;;) {
    const uint32_t p = next_host_port_++;
    if (next_host_port_ == 0xffffffffu) next_host_port_ = 1u << 30;
    if (!by_key_.count(ConnKey{vs::kHostCid, p, guest_port})) return p;
  }
}

void VsockDevice::host_connect(vhu::UniqueFd fd, uint32_t guest_port) {
  const bool early = VSOCKREF_FAULT(connect_before_config_read) && reset_state_ == ResetState::AwaitConfigRead;
  if (!accepting_incoming() && !early) {
    // Held, not refused: no host-initiated connection may reach the guest
    // before it has handled TRANSPORT_RESET (README, "Transport reset").
    if (held_.size() >= kMaxHeldConnects) {
      VLOG(Warn, "{}: CONNECT {} dropped: {} connects already wait for the transport reset", opts_.name, guest_port,
           held_.size());
      return;
    }
    held_.push_back(HeldConnect{std::move(fd), guest_port});
    return;
  }
  if (conns_.size() >= kMaxConnections) {
    VLOG(Warn, "{}: CONNECT {} refused: {} connections open", opts_.name, guest_port, conns_.size());
    return;
  }
  const uint32_t port = alloc_host_port(guest_port);
  Connection& conn = create(ConnKey{vs::kHostCid, port, guest_port}, vs::kTypeStream, std::move(fd));
  conn.state = ConnState::Connecting;
  conn.want_request = true;
  schedule(conn);
  VLOG(Debug, "{}: host connect to guest port {} from host port {}", opts_.name, guest_port, port);
  io_.request_processing();
}

}  // namespace vsockref
