// Fuzz target `vsock_packets`: the reference back-end's virtio-vsock device
// (reference-backend/vsock_device.*) driven by a sequence of guest packets
// and host-side events, with no vhost-user layer in between. The guest's
// rings are real split rings in a memfd (libvhu's driver side on one end, the
// device-side walker on the other); the host side is socketpairs handed to
// host_connect() and Unix listeners the device connects to for the guest's
// REQUESTs. A second VM in the same sibling group (CID 4, its own guest
// memory and device, made when an input first selects it) receives what the
// first sends to its CID through the device's relay, and the other way.
//
// Input: records of u8 op (low 4 bits) and op-specific fields (fuzz/README.md,
// "vsock_packets"). Bit 0x80 of a TX op fixes up the header (src_cid = the
// guest, dst_cid = the host, len = the payload) so mutations reach the
// connection state machine instead of the drop paths; with 0x20 as well it
// addresses the sibling VM instead of the host.
//
// Invariants, after every record:
//  - credit is never exceeded: the device sends no RW payload to the guest
//    beyond the buf_alloc and fwd_cnt the guest gave it (virtio 1.3, 5.10.6.3);
//  - buffering is bounded: no flow holds more guest-to-host bytes than the
//    buffer the device advertises (tx_buffer_size), nor more host-to-guest
//    bytes read ahead of the guest's credit than VsockDevice::kReadAhead;
//  - every rx packet fits the buffer it was written into, its len field
//    matches the bytes written, and it is addressed to the guest's CID;
//  - a sibling's packet arrives only through the relay: from the sibling's
//    CID, with no more RW bytes on a flow than the sibling's guest sent on it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend_process.h"
#include "fuzz_input.h"
#include "vhu/guest_memory.h"
#include "vhu/virtqueue.h"
#include "vhu/virtqueue_driver.h"
#include "vhu/vsock.h"
#include "router.h"
#include "vsock_device.h"

namespace {

namespace vs = vhu::vsock;

constexpr uint64_t kGuestCid = 3;
constexpr uint64_t kSiblingCid = 4;
constexpr uint32_t kTxBuffer = 4096;  // small, so credit runs out within short inputs
constexpr uint32_t kQueueSize = 64;
constexpr uint64_t kGpa = 0x100000;
constexpr uint64_t kRingArea = 64 * 1024;  // per ring, DriverQueue::area_bytes(64) fits
constexpr uint64_t kSlot = 8192;           // per descriptor buffer
constexpr uint64_t kMemBytes = 3 * kRingArea + 3 * kQueueSize * kSlot;
constexpr uint32_t kMaxPayload = 4096;
constexpr size_t kMaxPeers = 16;
// Host ports with a listener behind them: a guest REQUEST to these connects.
constexpr uint32_t kStreamPort = 1024;
constexpr uint32_t kSeqpacketPort = 1025;

enum Op : uint8_t {
  kTx = 0,          // 44-byte header, u16 len, payload
  kRxPost = 1,      // u8 count, u16 size
  kHostConnect = 2, // u32 guest port
  kHostWrite = 3,   // u8 peer, u16 len, bytes
  kHostRead = 4,    // u8 peer, u16 len
  kHostShut = 5,    // u8 peer, u8 how: 0 SHUT_WR, 1 SHUT_RD, else close
  kRing = 6,        // u8 ring, u8 usable
  kLoad = 7,        // a DEVICE_STATE load happened
  kConfigRead = 8,  // the driver read the config space
  kReset = 9,       // device reset
  kFeatures = 10,   // u64 acked features
  kEventPost = 11,  // u8 count
  kPoll = 12,       // one more round of the event loop
  kSelect = 13,     // u8 vm: the records that follow act on VM vm % 2
};
constexpr uint8_t kFixHeader = 0x80;
constexpr uint8_t kSplit = 0x40;      // TX: header and payload in two descriptors
constexpr uint8_t kToSibling = 0x20;  // TX with kFixHeader: dst_cid is the other VM
constexpr uint8_t kIndirect = 0x10;   // TX: the chain in an indirect table (Linux's choice when negotiated)
constexpr uint8_t kRxSplit = 0x80;    // RX post count byte: header and payload buffers apart

// The listeners outlive inputs: binding sockets per input would dominate.
struct Listeners {
  std::string uds;
  vhu::UniqueFd stream, seqpacket;
  Listeners() {
    char dir[] = "/tmp/vhu-fuzz-vsock-XXXXXX";
    VHU_FUZZ_CHECK(::mkdtemp(dir) != nullptr);
    uds = std::string(dir) + "/uds";
    stream = listen_on(kStreamPort, SOCK_STREAM);
    seqpacket = listen_on(kSeqpacketPort, SOCK_SEQPACKET);
  }
  vhu::UniqueFd listen_on(uint32_t port, int type) const {
    vhu::UniqueFd fd(::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string path = uds + "_" + std::to_string(port);
    VHU_FUZZ_CHECK(fd.valid() && path.size() < sizeof a.sun_path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    VHU_FUZZ_CHECK(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    VHU_FUZZ_CHECK(::listen(fd.get(), 64) == 0);
    return fd;
  }
};

Listeners& listeners() {
  static Listeners* l = new Listeners;  // never destroyed: the fuzzer exits instead
  return *l;
}

// The guest's view of one flow's credit, and the rx bytes it has received.
struct Flow {
  struct Credit {
    uint32_t buf_alloc = 0;
    uint32_t fwd_cnt = 0;
  };
  // Every credit the device may have used since the last check: packets it
  // consumed in one round may update credit before or after the rx it wrote.
  std::vector<Credit> credits{Credit{}};
  uint32_t received = 0;
};

class Guest final : public vsockref::RingIo {
 public:
  explicit Guest(bool event_idx) : event_idx_(event_idx) {
    fd_ = vhu::UniqueFd(::memfd_create("vhu-fuzz-vsock", MFD_CLOEXEC));
    VHU_FUZZ_CHECK(fd_.valid() && ::ftruncate(fd_.get(), kMemBytes) == 0);
    host_ = static_cast<uint8_t*>(::mmap(nullptr, kMemBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0));
    VHU_FUZZ_CHECK(host_ != MAP_FAILED);
    VHU_FUZZ_CHECK(mem_.add_region({kGpa, kMemBytes, 0x7f0000000000, 0}, vhu::UniqueFd(::dup(fd_.get()))).ok());
    for (unsigned q = 0; q < 3; ++q) {
      const uint64_t off = q * kRingArea;
      VHU_FUZZ_CHECK(drv_[q].init(host_ + off, kGpa + off, kQueueSize, event_idx).ok());
      VHU_FUZZ_CHECK(dev_[q].setup_gpa(mem_, kQueueSize, drv_[q].desc_gpa(), drv_[q].avail_gpa(), drv_[q].used_gpa(),
                                    {.indirect = true, .event_idx = event_idx})
                .ok());
      for (uint32_t s = 0; s < kQueueSize; ++s) free_[q].push_back(s);
    }
  }
  ~Guest() override { ::munmap(host_, kMemBytes); }

  vsockref::VsockDevice* device = nullptr;
  bool usable[3] = {true, true, true};

  // RingIo
  bool ring_usable(unsigned q) const override { return q < 3 && usable[q] && !broken_[q]; }
  bool ring_started(unsigned q) const override { return q < 3 && usable[q]; }
  std::optional<vhu::Chain> pop(unsigned q) override {
    auto c = dev_[q].pop();
    if (!c.ok()) {
      broken_[q] = true;  // our own driver side never builds a bad chain
      VHU_FUZZ_CHECK(false);
    }
    return std::move(*c);
  }
  void push(unsigned q, uint16_t head, uint32_t written) override { VHU_FUZZ_CHECK(dev_[q].push(head, written).ok()); }
  bool rearm(unsigned q) override {
    dev_[q].enable_notifications(true);
    auto n = dev_[q].pending();
    return n.ok() && *n > 0;
  }
  const vhu::GuestMemory& memory() const override { return mem_; }
  void request_processing() override {
    if (in_device_) {
      rerun_ = true;
      return;
    }
    in_device_ = true;
    do {
      do {
        rerun_ = false;
        device->process();
      } while (rerun_);
      device->read_ahead();  // as the vhost-user layer does, after the notifications
    } while (rerun_);
    in_device_ = false;
  }

  // Driver side: a chain of buffers in per-descriptor slots.
  uint8_t* slot_ptr(unsigned q, uint32_t slot) { return host_ + 3 * kRingArea + (q * kQueueSize + slot) * kSlot; }
  uint64_t slot_gpa(unsigned q, uint32_t slot) { return kGpa + 3 * kRingArea + (q * kQueueSize + slot) * kSlot; }

  // Posts one chain of `parts` buffers (each at most kSlot bytes); returns
  // its head, or -1 when the ring is full.
  int post(unsigned q, const std::vector<std::pair<std::span<const uint8_t>, uint32_t>>& parts, bool writable,
           bool indirect = false) {
    if (free_[q].size() < parts.size() || drv_[q].num_free() < parts.size()) return -1;
    std::vector<vhu::DriverBuffer> bufs;
    std::vector<uint32_t> slots;
    for (const auto& [bytes, len] : parts) {
      const uint32_t s = free_[q].back();
      free_[q].pop_back();
      slots.push_back(s);
      if (!bytes.empty()) std::memcpy(slot_ptr(q, s), bytes.data(), bytes.size());
      bufs.push_back({slot_gpa(q, s), len, writable});
    }
    // A device that took every tx buffer and went idle must have asked to
    // be kicked for the next one: with EVENT_IDX its avail_event, without it
    // the used ring's NO_NOTIFY flag. Else this buffer waits for ever.
    const auto pending = dev_[q].pending();
    const bool idle = q == vhu::vsock::kTxQueue && ring_usable(q) && pending.ok() && *pending == 0;
    const uint16_t old_idx = drv_[q].avail_idx();
    auto head = drv_[q].add(bufs, indirect);
    VHU_FUZZ_CHECK(head.ok());
    inflight_[q][*head] = slots;
    drv_[q].publish();
    if (idle) VHU_FUZZ_CHECK(drv_[q].needs_kick(old_idx));  // a lost wake-up
    return *head;
  }

  // Used entries of ring q: fn(head, slots, used length).
  template <class Fn>
  void reap(unsigned q, Fn fn) {
    while (auto u = drv_[q].pop_used()) {
      auto it = inflight_[q].find(static_cast<uint16_t>(u->id));
      VHU_FUZZ_CHECK(it != inflight_[q].end());
      fn(static_cast<uint16_t>(u->id), it->second, u->len);
      for (uint32_t s : it->second) free_[q].push_back(s);
      inflight_[q].erase(it);
    }
    // As Linux re-enables callbacks: interrupt me at the next used entry.
    if (event_idx_) drv_[q].set_used_event(drv_[q].last_used());
  }

 private:
  vhu::UniqueFd fd_;
  uint8_t* host_ = nullptr;
  vhu::GuestMemory mem_;
  vhu::DriverQueue drv_[3];
  vhu::DeviceQueue dev_[3];
  bool broken_[3] = {};
  std::vector<uint32_t> free_[3];
  std::map<uint16_t, std::vector<uint32_t>> inflight_[3];
  bool in_device_ = false, rerun_ = false;
  bool event_idx_;
};

// One VM: its guest, its device, and what its guest knows of its flows.
struct Side {
  Side(vsockref::EventLoop& loop, vsockref::Router& router, uint64_t cid, uint64_t peer_cid, bool event_idx)
      : cid(cid), peer_cid(peer_cid), guest(event_idx), device(loop, guest, options(cid), &router), router(router) {
    guest.device = &device;
    device.set_features(vhu::bit(vhu::feature::VSOCK_F_STREAM) | vhu::bit(vhu::feature::VSOCK_F_SEQPACKET));
    router.add(cid, {"fuzz"}, &device);
  }
  ~Side() {
    router.remove(&device);
    // The device closes its sockets; the harness's go with its peers.
    device.reset();
  }

  static vsockref::VsockOptions options(uint64_t cid) {
    vsockref::VsockOptions o;
    o.guest_cid = cid;
    o.tx_buffer_size = kTxBuffer;
    o.uds_path = listeners().uds;
    o.name = "fuzz";
    return o;
  }

  const uint64_t cid, peer_cid;
  Guest guest;
  vsockref::VsockDevice device;
  vsockref::Router& router;
  std::map<uint64_t, Flow> flows;                      // host flows
  std::map<uint64_t, uint64_t> to_peer;                // RW bytes our guest sent the sibling, by flow
  std::map<uint16_t, std::pair<vs::Hdr, bool>> sent;  // tx packets by head
  std::map<uint16_t, uint32_t> rx_sizes;              // rx buffer sizes by head
};

class Harness {
 public:
  // VM 0 negotiated EVENT_IDX, as Linux does with any back-end that offers
  // it; VM 1 did not, so both ways of suppressing notifications are fuzzed.
  Harness() { sides_[0] = std::make_unique<Side>(loop_.get(), router_, kGuestCid, kSiblingCid, true); }
  ~Harness() {
    sides_[1].reset();
    sides_[0].reset();
  }

  void step(vhu::fuzz::Input& in) {
    const auto op = in.take<uint8_t>();
    Side& s = *sides_[cur_];
    switch (op & 0x0f) {
      case kTx: tx(s, op, in); break;
      case kRxPost: {
        const auto count = in.take<uint8_t>();
        const int n = count % 16 + 1;
        const uint32_t size = in.take<uint16_t>() % (kMaxPayload + vs::kHdrSize + 1);
        // Bit 0x80: header and payload in two descriptors, as Linux posted rx
        // buffers before 6.x; the device must find the payload past the first.
        std::vector<std::pair<std::span<const uint8_t>, uint32_t>> parts{{{}, size}};
        constexpr uint32_t kHdr = vs::kHdrSize;
        if ((count & kRxSplit) && size > kHdr) parts = {{{}, kHdr}, {{}, size - kHdr}};
        for (int i = 0; i < n; ++i) {
          const int head = s.guest.post(vs::kRxQueue, parts, true);
          if (head < 0) break;
          s.rx_sizes[static_cast<uint16_t>(head)] = size;
        }
        break;
      }
      case kHostConnect: {
        const auto port = in.take<uint32_t>();
        int sv[2];
        VHU_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        small_buffers(sv[0]);
        add_peer(vhu::UniqueFd(sv[1]));
        s.device.host_connect(vhu::UniqueFd(sv[0]), port);
        break;
      }
      case kHostWrite: {
        const int peer = in.take<uint8_t>();
        const auto bytes = in.bytes(in.take<uint16_t>() % (kMaxPayload + 1));
        if (!peers_.empty())
          (void)!::send(peers_[peer % peers_.size()].get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
      }
      case kHostRead: {
        const int peer = in.take<uint8_t>();
        const size_t n = in.take<uint16_t>() % (kMaxPayload + 1);
        std::vector<uint8_t> buf(n + 1);
        if (!peers_.empty()) (void)!::recv(peers_[peer % peers_.size()].get(), buf.data(), n, MSG_DONTWAIT);
        break;
      }
      case kHostShut: {
        const int peer = in.take<uint8_t>();
        const int how = in.take<uint8_t>();
        if (peers_.empty()) break;
        auto& fd = peers_[peer % peers_.size()];
        if (how == 0) ::shutdown(fd.get(), SHUT_WR);
        else if (how == 1) ::shutdown(fd.get(), SHUT_RD);
        else fd.reset();
        break;
      }
      case kRing: {
        const unsigned q = in.take<uint8_t>() % 3;
        s.guest.usable[q] = (in.take<uint8_t>() & 1) != 0;
        s.device.rings_changed();
        break;
      }
      case kLoad:
        s.device.loaded(vsockref::DeviceState{});
        s.flows.clear();  // every flow is gone, silently
        break;
      case kConfigRead: s.device.config_read(); break;
      case kReset:
        s.device.reset();
        s.flows.clear();
        break;
      case kFeatures: s.device.set_features(in.take<uint64_t>()); break;
      case kEventPost: {
        const int n = in.take<uint8_t>() % 8 + 1;
        for (int i = 0; i < n; ++i)
          if (s.guest.post(vs::kEventQueue, {{{}, 8}}, true) < 0) break;
        break;
      }
      case kSelect:
        cur_ = in.take<uint8_t>() & 1;
        if (!sides_[cur_]) sides_[cur_] = std::make_unique<Side>(loop_.get(), router_, kSiblingCid, kGuestCid, false);
        break;
      case kPoll:
      default: break;
    }
    loop_.get().run_once(0);
    for (auto& side : sides_)
      if (side) side->guest.request_processing();
    accept_peers();
    settle();
  }

 private:
  static void small_buffers(int fd) {
    const int size = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }

  void add_peer(vhu::UniqueFd fd) {
    if (peers_.size() >= kMaxPeers) peers_.erase(peers_.begin());
    peers_.push_back(std::move(fd));
  }

  // Connections the device made for the guest's REQUESTs.
  void accept_peers() {
    for (int l : {listeners().stream.get(), listeners().seqpacket.get()}) {
      for (;;) {
        vhu::UniqueFd fd(::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) break;
        small_buffers(fd.get());
        add_peer(std::move(fd));
      }
    }
  }

  static uint64_t flow_key(uint32_t host_port, uint32_t guest_port) {
    return uint64_t{host_port} << 32 | guest_port;
  }

  void tx(Side& s, uint8_t op, vhu::fuzz::Input& in) {
    auto raw = in.take<std::array<uint8_t, vs::kHdrSize>>();
    const auto payload = in.bytes(in.take<uint16_t>() % (kMaxPayload + 1));
    vs::Hdr h = *vs::decode(raw);
    if (op & kFixHeader) {
      h.src_cid = s.cid;
      h.dst_cid = (op & kToSibling) ? s.peer_cid : vs::kHostCid;
      h.len = static_cast<uint32_t>(payload.size());
      raw = vs::encode(h);
    }
    std::vector<uint8_t> whole(raw.begin(), raw.end());
    const bool indirect = (op & kIndirect) != 0;
    int head;
    if (op & kSplit) {
      head = s.guest.post(vs::kTxQueue,
                          {{raw, static_cast<uint32_t>(raw.size())}, {payload, static_cast<uint32_t>(payload.size())}},
                          false, indirect);
    } else {
      whole.insert(whole.end(), payload.begin(), payload.end());
      head = s.guest.post(vs::kTxQueue, {{whole, static_cast<uint32_t>(whole.size())}}, false, indirect);
    }
    if (head >= 0) s.sent[static_cast<uint16_t>(head)] = {h, h.len <= payload.size()};
  }

  // The device consumed a tx packet: what it tells the device about credit,
  // or what the sibling may now receive.
  static void consumed(Side& s, const vs::Hdr& h, bool well_formed) {
    if (h.src_cid != s.cid || !well_formed) return;  // dropped unread
    if (h.dst_cid == s.peer_cid) {
      if (h.op == static_cast<uint16_t>(vs::Op::RW)) s.to_peer[flow_key(h.src_port, h.dst_port)] += h.len;
      return;
    }
    if (h.dst_cid != vs::kHostCid) return;
    Flow& f = s.flows[flow_key(h.dst_port, h.src_port)];
    if (h.op == static_cast<uint16_t>(vs::Op::REQUEST) || h.op == static_cast<uint16_t>(vs::Op::RST)) f = Flow{};
    if (h.op == static_cast<uint16_t>(vs::Op::RST)) return;
    f.credits.push_back({h.buf_alloc, h.fwd_cnt});
  }

  void received(Side& s, std::span<const uint8_t> bytes, uint32_t posted, uint32_t used) {
    VHU_FUZZ_CHECK(used <= posted);
    if (posted < vs::kHdrSize) {
      VHU_FUZZ_CHECK(used == 0);  // returned unused: too small for a header
      return;
    }
    VHU_FUZZ_CHECK(used >= vs::kHdrSize);
    const vs::Hdr h = *vs::decode(bytes);
    VHU_FUZZ_CHECK(used == vs::kHdrSize + h.len);
    VHU_FUZZ_CHECK(h.dst_cid == s.cid);
    const uint64_t key = flow_key(h.src_port, h.dst_port);
    const auto op = static_cast<vs::Op>(h.op);
    if (op == vs::Op::RST) {
      // An RST may answer a packet to any CID, so it comes from there; only
      // the host's ends a host flow.
      if (h.src_cid == vs::kHostCid) s.flows.erase(key);
      return;
    }
    if (h.src_cid == s.peer_cid) {
      // Relayed: the sibling guest's own header, so its credit fields are
      // the two guests' business; the bytes must have been sent.
      VHU_FUZZ_CHECK(sides_[0] && sides_[1]);
      if (op == vs::Op::RW) {
        Side& peer = *sides_[&s == sides_[0].get() ? 1 : 0];
        uint64_t& sent = peer.to_peer[key];
        VHU_FUZZ_CHECK(h.len <= sent);
        sent -= h.len;
      }
      return;
    }
    // A host-initiated flow began (with no credit) when host_connect() made it,
    // on a host port never used before; a guest may answer its REQUEST before
    // reading it, so its arrival here resets nothing.
    VHU_FUZZ_CHECK(h.src_cid == vs::kHostCid);
    if (op == vs::Op::RW) {
      VHU_FUZZ_CHECK(h.type == vs::kTypeSeqpacket || h.len > 0);
      Flow& f = s.flows[key];
      bool within = false;
      for (const Flow::Credit& c : f.credits) {
        const uint32_t in_flight = f.received - c.fwd_cnt;
        within = within || (in_flight <= c.buf_alloc && h.len <= c.buf_alloc - in_flight);
      }
      VHU_FUZZ_CHECK(within);  // RW beyond the guest's credit
      f.received += h.len;
    } else {
      VHU_FUZZ_CHECK(h.len == 0);
    }
    // Everything the device sends for a flow carries its own credit.
    VHU_FUZZ_CHECK(h.buf_alloc == kTxBuffer);
  }

  // Collects what the devices returned and checks it: every tx first, so a
  // packet relayed in this round is counted as sent before it is received;
  // then only the current credit of each flow counts for the next round.
  void settle() {
    for (auto& side : sides_) {
      if (!side) continue;
      Side& s = *side;
      s.guest.reap(vs::kTxQueue, [&](uint16_t head, const std::vector<uint32_t>&, uint32_t) {
        auto it = s.sent.find(head);
        VHU_FUZZ_CHECK(it != s.sent.end());
        consumed(s, it->second.first, it->second.second);
        s.sent.erase(it);
      });
    }
    std::vector<uint8_t> buf(vs::kHdrSize);
    for (auto& side : sides_) {
      if (!side) continue;
      Side& s = *side;
      s.guest.reap(vs::kRxQueue, [&](uint16_t head, const std::vector<uint32_t>& slots, uint32_t used) {
        auto it = s.rx_sizes.find(head);
        VHU_FUZZ_CHECK(it != s.rx_sizes.end());
        const uint32_t posted = it->second;
        s.rx_sizes.erase(it);
        std::memcpy(buf.data(), s.guest.slot_ptr(vs::kRxQueue, slots[0]), buf.size());
        received(s, buf, posted, used);
      });
      s.guest.reap(vs::kEventQueue, [&](uint16_t, const std::vector<uint32_t>&, uint32_t used) {
        VHU_FUZZ_CHECK(used == 0 || used == vs::kEventSize);
      });
      for (auto& [key, f] : s.flows) f.credits.erase(f.credits.begin(), f.credits.end() - 1);
      VHU_FUZZ_CHECK(s.device.max_host_backlog() <= kTxBuffer);
      VHU_FUZZ_CHECK(s.device.max_read_ahead() <= vsockref::VsockDevice::kReadAhead);
    }
  }

  vhu::fuzz::ProcessLoop loop_;
  vsockref::Router router_;
  std::unique_ptr<Side> sides_[2];
  unsigned cur_ = 0;
  std::vector<vhu::UniqueFd> peers_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vhu::fuzz::init_backend_process();
  (void)listeners();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    Harness h;
    vhu::fuzz::Input in(data, size);
    for (int steps = 0; !in.empty() && steps < 256; ++steps) h.step(in);
  }
  // Connections the device made and nobody accepted die with the input.
  for (int l : {listeners().stream.get(), listeners().seqpacket.get()})
    while (vhu::UniqueFd(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC))) {
    }
  return 0;
}
