#include "vsock_guest.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "failure.h"
#include "vhu/channel.h"

namespace conform {

namespace vs = vhu::vsock;
using Clock = std::chrono::steady_clock;

VsockGuest::VsockGuest(GuestRam& ram, uint64_t guest_cid, bool event_idx, uint32_t queue_size)
    : ram_(ram),
      cid_(guest_cid),
      rx_(ram, vs::kRxQueue, queue_size, event_idx, 1),
      tx_(ram, vs::kTxQueue, queue_size, event_idx, 0) {
  init_pools();
}

void VsockGuest::init_pools() {
  rx_pool_.clear();
  tx_pool_.clear();
  rx_inflight_.clear();
  tx_inflight_.clear();
  // rx buffers in the region whose memfd has an offset, tx in the other: both
  // translations get exercised.
  for (uint32_t i = 0; i < rx_.size(); ++i) rx_pool_.push_back(ram_.alloc(kBufSize, 64, 1));
  for (uint32_t i = 0; i < tx_.size(); ++i) tx_pool_.push_back(ram_.alloc(kBufSize, 64, 0));
}

void VsockGuest::reset_rings(int rx_region, int tx_region) {
  rx_.relocate(rx_region);
  tx_.relocate(tx_region);
  backlog_.clear();
  conns_.clear();
  framed_head_.reset();
  init_pools();
}

unsigned VsockGuest::post_rx_buffers(unsigned max) {
  unsigned n = 0;
  while (n < max && !rx_pool_.empty() && rx_.dq().num_free() > 0) {
    uint64_t gpa = rx_pool_.back();
    const bool small = small_rx_every_ != 0 && (rx_posted_ + 1) % small_rx_every_ == 0;
    std::vector<vhu::DriverBuffer> bufs;
    int framing = -1;
    if (!small && !rx_framings_.empty()) {
      framing = static_cast<int>(rx_framed_posted_ % rx_framings_.size());
      const auto& sizes = rx_framings_[static_cast<size_t>(framing)];
      bufs.resize(sizes.size());
      uint64_t at = gpa;
      for (size_t i = sizes.size(); i-- > 0;) {
        bufs[i] = {at, sizes[i], true};
        at += sizes[i];
      }
    } else {
      bufs.push_back({gpa, small ? small_rx_size_ : kBufSize, true});
    }
    if (rx_.dq().num_free() < bufs.size()) break;
    std::memset(ram_.host(gpa, kBufSize), 0, kBufSize);
    auto head = rx_.dq().add(bufs);
    if (!head) throw std::runtime_error("suite bug: rx add: " + head.message());
    rx_pool_.pop_back();
    rx_inflight_[*head] = RxPosted{gpa, std::move(bufs), framing};
    rx_framed_posted_ += framing >= 0;
    ++rx_posted_;
    small_rx_posted_ += small;
    ++n;
  }
  rx_.dq().publish();
  return n;
}

void VsockGuest::frame_rx(std::vector<std::vector<uint32_t>> framings) {
  for (const auto& f : framings) {
    uint64_t sum = 0;
    for (uint32_t n : f) sum += n;
    if (f.empty() || sum > kBufSize || std::find(f.begin(), f.end(), 0u) != f.end())
      throw std::runtime_error("suite bug: an rx framing must be non-empty pieces within a buffer");
  }
  rx_framings_ = std::move(framings);
  rx_framed_posted_ = 0;
}

void VsockGuest::interleave_small_rx(unsigned every, uint32_t size) {
  small_rx_every_ = every;
  small_rx_size_ = std::min(size, kBufSize);
}

void VsockGuest::send_framed(const vs::Hdr& h0, std::span<const uint8_t> payload, std::span<const uint32_t> pieces,
                             bool indirect) {
  constexpr uint64_t kFramedMax = 2 * 65536;
  constexpr size_t kMaxPieces = 16;
  constexpr uint64_t kFramedArea = kFramedMax + 128 * kMaxPieces;
  const uint64_t total = vs::kHdrSize + payload.size();
  uint64_t sum = 0;
  for (uint32_t n : pieces) sum += n;
  if (sum != total || total > kFramedMax || pieces.empty() || pieces.size() > kMaxPieces || std::find(pieces.begin(), pieces.end(), 0u) != pieces.end())
    throw std::runtime_error("suite bug: framed packet pieces do not cover it");
  if (framed_head_ && !wait_until([&] { return !framed_head_; }, 2000))
    fail("the back-end to use the previous tx packet", "not used within 2 s");
  if (tx_.dq().num_free() < (indirect ? 1 : pieces.size()) && !wait_until([&] {
        return tx_.dq().num_free() >= (indirect ? 1 : pieces.size());
      }, 2000))
    fail("the back-end to consume tx buffers", "the tx ring stayed full for 2 s");
  if (!framed_gpa_) framed_gpa_ = ram_.alloc(kFramedArea, 64, 0);
  const vs::Hdr h = packet_hdr(h0, payload.size());
  std::vector<uint8_t> bytes(total);
  vs::encode(h, std::span<uint8_t, vs::kHdrSize>(bytes.data(), vs::kHdrSize));
  if (!payload.empty()) std::memcpy(bytes.data() + vs::kHdrSize, payload.data(), payload.size());
  // Pieces lie in memory last first, with a gap of filler between them: a
  // device that reads on past a descriptor's end, rather than following the
  // chain, reads the filler or the wrong piece.
  std::memset(ram_.host(framed_gpa_, kFramedArea), 0xEE, kFramedArea);
  std::vector<vhu::DriverBuffer> bufs(pieces.size());
  uint64_t at = framed_gpa_, from = total;
  for (size_t i = pieces.size(); i-- > 0;) {
    from -= pieces[i];
    std::memcpy(ram_.host(at, pieces[i]), bytes.data() + from, pieces[i]);
    bufs[i] = {at, pieces[i], false};
    at += (pieces[i] + 64 + 63) & ~uint64_t{63};
  }
  framed_head_ = add_tx(bufs, indirect, true);
}

vs::Hdr VsockGuest::packet_hdr(const vs::Hdr& h0, size_t len) {
  vs::Hdr h = h0;
  h.len = static_cast<uint32_t>(len);
  if (auto* c = conn(h.src_port, h.dst_port)) {
    h.buf_alloc = c->buf_alloc;
    h.fwd_cnt = c->fwd_cnt;
  }
  return h;
}

uint16_t VsockGuest::add_tx(std::span<const vhu::DriverBuffer> bufs, bool indirect, bool kick) {
  const uint16_t old = tx_.dq().avail_idx();
  auto head = tx_.dq().add(bufs, indirect);
  if (!head) throw std::runtime_error("suite bug: tx add: " + head.message());
  tx_.dq().publish();
  if (kick && tx_.dq().needs_kick(old)) tx_.kick();
  return *head;
}

vs::Hdr VsockGuest::hdr(vs::Op op, uint32_t src_port, uint32_t dst_port, uint32_t len) const {
  vs::Hdr h;
  h.src_cid = cid_;
  h.dst_cid = vs::kHostCid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.len = len;
  h.type = vs::kTypeStream;
  h.op = static_cast<uint16_t>(op);
  h.buf_alloc = 256 * 1024;
  return h;
}

unsigned VsockGuest::reclaim_tx() {
  unsigned n = 0;
  while (auto u = tx_.dq().pop_used()) {
    if (framed_head_ && u->id == *framed_head_) {
      framed_head_.reset();
      ++n;
      continue;
    }
    auto it = tx_inflight_.find(static_cast<uint16_t>(u->id));
    if (it == tx_inflight_.end()) {
      anomalies_.push_back(fmt::format("tx used id {} was not in flight", u->id));
      continue;
    }
    tx_pool_.push_back(it->second);
    tx_inflight_.erase(it);
    ++n;
  }
  return n;
}

void VsockGuest::send(const vs::Hdr& h0, std::span<const uint8_t> payload, bool kick) {
  if (payload.size() + vs::kHdrSize > kBufSize) throw std::runtime_error("suite bug: vsock packet too large");
  const vs::Hdr h = packet_hdr(h0, payload.size());
  if (tx_pool_.empty() || tx_.dq().num_free() == 0) reclaim_tx();
  if (tx_pool_.empty() || tx_.dq().num_free() == 0)
    wait_until([&] { return reclaim_tx() > 0 || (!tx_pool_.empty() && tx_.dq().num_free() > 0); }, 2000);
  if (tx_pool_.empty() || tx_.dq().num_free() == 0)
    fail("the back-end to consume tx buffers", "the tx ring stayed full for 2 s");
  uint64_t gpa = tx_pool_.back();
  uint8_t* p = ram_.host(gpa, kBufSize);
  vs::encode(h, std::span<uint8_t, vs::kHdrSize>(p, vs::kHdrSize));
  if (!payload.empty()) std::memcpy(p + vs::kHdrSize, payload.data(), payload.size());
  const vhu::DriverBuffer b{gpa, static_cast<uint32_t>(vs::kHdrSize + payload.size()), false};
  tx_inflight_[add_tx({&b, 1}, false, kick)] = gpa;
  tx_pool_.pop_back();
}

std::vector<RxPacket> VsockGuest::poll_rx(bool repost) {
  // The call fd is left as it is: cases that judge calls read it themselves.
  std::vector<RxPacket> out;
  while (auto u = rx_.dq().pop_used()) {
    auto it = rx_inflight_.find(static_cast<uint16_t>(u->id));
    if (it == rx_inflight_.end()) {
      anomalies_.push_back(fmt::format("rx used id {} was not in flight", u->id));
      continue;
    }
    const RxPosted& posted = it->second;
    RxPacket p;
    p.used_len = u->len;
    p.framing = posted.framing;
    p.descs = posted.descs;
    const uint8_t* buf = ram_.host(posted.gpa, kBufSize);
    std::vector<uint8_t> gathered;
    uint32_t size = 0;
    for (const auto& d : posted.descs) size += d.len;
    if (posted.descs.size() > 1) {
      // A framed buffer reads as its descriptors in chain order.
      gathered.resize(kBufSize);
      size_t off = 0;
      for (const auto& d : posted.descs) {
        std::memcpy(gathered.data() + off, ram_.host(d.gpa, d.len), d.len);
        off += d.len;
      }
      buf = gathered.data();
    }
    auto h = vs::decode({buf, vs::kHdrSize});
    if (u->len > size) {
      anomalies_.push_back(fmt::format(
          "rx used len {} beyond its {}-byte buffer (the device must have written at least len bytes)", u->len, size));
    } else if (size < vs::kHdrSize && u->len == 0) {
      // Too small for a packet and given back empty: what a device can do with it.
      ++small_rx_returned_;
    } else if (u->len < vs::kHdrSize || !h) {
      anomalies_.push_back(fmt::format("rx used len {} is shorter than a vsock header", u->len));
    } else {
      p.hdr = *h;
      uint32_t n = std::min<uint32_t>(p.hdr.len, kBufSize - vs::kHdrSize);
      if (p.hdr.len + vs::kHdrSize > u->len)
        anomalies_.push_back(fmt::format("rx packet hdr.len {} exceeds used len {}", p.hdr.len, u->len));
      p.data.assign(buf + vs::kHdrSize, buf + vs::kHdrSize + n);
      handle(p);
      if (record_rx_) record_rx_->push_back(p);
      out.push_back(p);
    }
    rx_pool_.push_back(posted.gpa);
    rx_inflight_.erase(it);
  }
  if (repost && !hold_rx_ && !out.empty()) {
    uint16_t old = rx_.dq().avail_idx();
    post_rx_buffers();
    if (rx_.dq().needs_kick(old)) rx_.kick();
  }
  return out;
}

GuestConn* VsockGuest::conn(uint32_t local_port, uint32_t host_port) {
  auto it = conns_.find({local_port, host_port});
  return it == conns_.end() ? nullptr : &it->second;
}

void VsockGuest::handle(const RxPacket& p) {
  const auto& h = p.hdr;
  GuestConn* c = conn(h.dst_port, h.src_port);
  if (h.dst_cid != cid_ || std::find(peers_.begin(), peers_.end(), h.src_cid) == peers_.end() ||
      (c && h.src_cid != c->peer_cid))
    anomalies_.push_back("rx packet with wrong addresses: " + vs::describe(h));
  if (!c) {
    if (h.op != static_cast<uint16_t>(vs::Op::REQUEST) && h.op != static_cast<uint16_t>(vs::Op::RST))
      anomalies_.push_back("rx packet for no connection: " + vs::describe(h));
    return;
  }
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;
  switch (static_cast<vs::Op>(h.op)) {
    case vs::Op::RESPONSE: c->established = true; break;
    case vs::Op::RST: c->reset = true; c->established = false; break;
    case vs::Op::SHUTDOWN: c->shutdown_flags |= h.flags; break;
    case vs::Op::RW: {
      c->received.append(p.data.begin(), p.data.end());
      if (c->reading) c->fwd_cnt += static_cast<uint32_t>(p.data.size());
      break;
    }
    case vs::Op::CREDIT_REQUEST: {
      credit_update(*c);
      break;
    }
    default: break;
  }
}

std::optional<RxPacket> VsockGuest::wait_rx(const std::function<bool(const RxPacket&)>& pred, int timeout_ms) {
  for (auto it = backlog_.begin(); it != backlog_.end(); ++it) {
    if (pred(*it)) {
      RxPacket p = std::move(*it);
      backlog_.erase(it);
      return p;
    }
  }
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto pkts = poll_rx();
    std::optional<RxPacket> found;
    for (auto& p : pkts) {
      if (!found && pred(p))
        found = std::move(p);
      else
        backlog_.push_back(std::move(p));
    }
    if (found) return found;
    if (Clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

bool VsockGuest::wait_until(const std::function<bool()>& cond, int timeout_ms) {
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (cond()) return true;
    if (Clock::now() >= end) return false;
    for (auto& p : poll_rx()) backlog_.push_back(std::move(p));
    reclaim_tx();
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

vs::Hdr VsockGuest::conn_hdr(const GuestConn& c, vs::Op op) const {
  vs::Hdr h = hdr(op, c.local_port, c.peer_port);
  h.dst_cid = c.peer_cid;
  h.type = c.type;
  return h;
}

void VsockGuest::read_queued(GuestConn& c) {
  c.fwd_cnt += c.unread();
  c.reading = true;
  credit_update(c);
}

void VsockGuest::credit_update(const GuestConn& c) { send(conn_hdr(c, vs::Op::CREDIT_UPDATE)); }

GuestConn& VsockGuest::connect(uint32_t local_port, uint32_t host_port) {
  return connect_to(vs::kHostCid, local_port, host_port);
}

GuestConn& VsockGuest::connect_to(uint64_t peer_cid, uint32_t local_port, uint32_t peer_port, uint16_t type) {
  GuestConn& c = conns_[{local_port, peer_port}];
  c = GuestConn{};
  c.local_port = local_port;
  c.peer_port = peer_port;
  c.peer_cid = peer_cid;
  c.type = type;
  send(conn_hdr(c, vs::Op::REQUEST));
  return c;
}

GuestConn& VsockGuest::accept(const RxPacket& request) {
  const auto& r = request.hdr;
  GuestConn& c = conns_[{r.dst_port, r.src_port}];
  c = GuestConn{};
  c.local_port = r.dst_port;
  c.peer_port = r.src_port;
  c.peer_cid = r.src_cid;
  c.type = r.type;
  c.established = true;
  c.peer_buf_alloc = r.buf_alloc;
  c.peer_fwd_cnt = r.fwd_cnt;
  send(conn_hdr(c, vs::Op::RESPONSE));
  return c;
}

void VsockGuest::accept(uint32_t local_port, uint32_t host_port) {
  GuestConn& c = conns_[{local_port, host_port}];
  c = GuestConn{};
  c.local_port = local_port;
  c.peer_port = host_port;
  c.established = true;
  send(hdr(vs::Op::RESPONSE, local_port, host_port));
}

void VsockGuest::write(GuestConn& c, std::string_view data, bool kick) {
  if (!data.empty()) write_rw(c, data, kick, /*eom=*/false);
}

void VsockGuest::write_message(GuestConn& c, std::string_view m) { write_rw(c, m, /*kick=*/true, /*eom=*/true); }

void VsockGuest::write_rw(GuestConn& c, std::string_view data, bool kick, bool eom) {
  const size_t chunk = kBufSize - vs::kHdrSize;
  do {
    if (!data.empty() && c.peer_credit() == 0) {
      wait_until([&] { return c.peer_credit() > 0 || c.reset; }, 2000);
      if (c.peer_credit() == 0)
        fail("credit from the peer to send more data", c.reset ? "RST" : "no CREDIT_UPDATE within 2 s");
    }
    const size_t n = std::min<size_t>({data.size(), chunk, static_cast<size_t>(c.peer_credit())});
    vs::Hdr h = conn_hdr(c, vs::Op::RW);
    if (eom && n == data.size()) h.flags = vs::kSeqEom;
    send(h, {reinterpret_cast<const uint8_t*>(data.data()), n}, kick);
    c.tx_cnt += static_cast<uint32_t>(n);
    data.remove_prefix(n);
  } while (!data.empty());
}

void VsockGuest::write_framed(GuestConn& c, std::string_view data, std::span<const uint32_t> pieces, bool indirect) {
  if (c.peer_credit() < data.size() && !wait_until([&] { return c.peer_credit() >= data.size() || c.reset; }, 2000))
    fail(fmt::format("credit from the peer for a {}-byte packet", data.size()),
         fmt::format("{} bytes of credit after 2 s", c.peer_credit()));
  send_framed(conn_hdr(c, vs::Op::RW), {reinterpret_cast<const uint8_t*>(data.data()), data.size()}, pieces, indirect);
  c.tx_cnt += static_cast<uint32_t>(data.size());
}

// ---- host side ----

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string read_some(int fd, int timeout_ms, bool* eof) {
  if (eof) *eof = false;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return {};
  char buf[65536];
  ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n == 0 && eof) *eof = true;
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

std::string read_n(int fd, size_t n, int timeout_ms) {
  std::string out;
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < n) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    if (left <= 0) break;
    bool eof = false;
    out += read_some(fd, left, &eof);
    if (eof) break;
  }
  return out;
}

vhu::UniqueFd accept_timeout(int listen_fd, int timeout_ms) {
  auto r = vhu::accept_unix(listen_fd, timeout_ms);
  return r ? std::move(*r) : vhu::UniqueFd();
}

vhu::UniqueFd HostSide::connect(uint32_t guest_port) {
  auto s = vhu::connect_unix(uds_);
  if (!s) fail("the back-end to listen on its hybrid-vsock socket " + uds_, s.message());
  vhu::UniqueFd fd = std::move(*s);
  if (!write_all(fd.get(), fmt::format("CONNECT {}\n", guest_port)))
    fail("to write CONNECT to " + uds_, "the back-end closed the socket");
  return fd;
}

std::string read_line(int fd, int timeout_ms) {
  // Byte by byte: whatever follows the line is stream data for the caller.
  std::string out;
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.empty() || out.back() != '\n') {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) <= 0) break;
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n <= 0) break;
    out += c;
  }
  return out;
}

vhu::UniqueFd HostSide::listen(uint32_t port) {
  std::string path = fmt::format("{}_{}", uds_, port);
  ::unlink(path.c_str());
  auto l = vhu::listen_unix(path);
  if (!l) fail("to listen on " + path, l.message());
  return std::move(*l);
}

}  // namespace conform
