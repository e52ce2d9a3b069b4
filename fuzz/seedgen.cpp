// Writes seed inputs for the fuzz targets that need structure a mutator
// would take long to find: valid split rings laid out with libvhu's driver
// side (plain, multi-segment, cross-region and indirect chains, and vsock
// packets in them); complete vhost-user sessions that start the device and
// move packets; vsock conversations; valid device-state blobs.
//   vhu-seedgen CORPUS_DIR
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "device_state.h"
#include "vhu/fuzz_framing.h"
#include "vhu/features.h"
#include "vhu/messages.h"
#include "vhu/virtqueue_driver.h"
#include "vhu/vsock.h"
#include "vring_layout.h"

namespace fs = std::filesystem;
using namespace vhu::fuzz::vring_layout;

namespace {

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

// One vring seed: a queue of 2^log2 entries at offset 0, chains from `build`.
template <class Build>
std::vector<uint8_t> vring_seed(uint8_t log2, uint8_t flags, Build build) {
  std::vector<uint8_t> mem(kMemoryBytes, 0);
  vhu::DriverQueue q;
  const uint32_t size = 1u << log2;
  if (!q.init(mem.data(), kRegion0Gpa, size, (flags & kFlagEventIdx) != 0).ok()) std::abort();
  build(q);
  q.publish();
  Header h{log2, flags, 0, 0, static_cast<uint16_t>(q.avail_gpa() - kRegion0Gpa),
           static_cast<uint16_t>(q.used_gpa() - kRegion0Gpa)};
  std::vector<uint8_t> out(sizeof(h));
  std::memcpy(out.data(), &h, sizeof(h));
  // Trailing zeros are implied by the target; keep the seed short.
  size_t end = mem.size();
  while (end > 0 && mem[end - 1] == 0) --end;
  out.insert(out.end(), mem.begin(), mem.begin() + static_cast<long>(end));
  return out;
}

constexpr uint64_t kData = kRegion0Gpa + 0x4000;

namespace vs = vhu::vsock;
namespace fr = vhu::fuzz::framing;
using vhu::FrontendReq;

vs::Hdr packet(vs::Op op, uint32_t src_port, uint32_t dst_port, uint32_t len = 0, uint16_t type = vs::kTypeStream) {
  vs::Hdr h;
  h.src_cid = 3;
  h.dst_cid = vs::kHostCid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.len = len;
  h.type = type;
  h.op = static_cast<uint16_t>(op);
  h.buf_alloc = 64 * 1024;
  return h;
}

// ---- vring: a ring of vsock packets, some earning an RST ----

// Each chain: the packet readable (header, then payload), then a writable
// buffer the reply can go to when the ring is walked as rx.
std::vector<uint8_t> vring_vsock_packets(const std::vector<vs::Hdr>& pkts) {
  std::vector<uint8_t> mem(kMemoryBytes, 0);
  vhu::DriverQueue q;
  const uint8_t log2 = 4;
  if (!q.init(mem.data(), kRegion0Gpa, 1u << log2, false).ok()) std::abort();
  uint64_t at = kData;
  for (const vs::Hdr& h : pkts) {
    const auto hb = vs::encode(h);
    std::memcpy(mem.data() + (at - kRegion0Gpa), hb.data(), hb.size());
    vhu::DriverBuffer b[] = {{at, static_cast<uint32_t>(vs::kHdrSize + h.len), false}, {at + 256, 256, true}};
    (void)q.add(b);
    at += 512;
  }
  q.publish();
  // Flags: SEQPACKET and STREAM negotiated.
  Header hd{log2, static_cast<uint8_t>(3u << kVsockFeatureShift), 0, 0,
            static_cast<uint16_t>(q.avail_gpa() - kRegion0Gpa), static_cast<uint16_t>(q.used_gpa() - kRegion0Gpa)};
  std::vector<uint8_t> out(sizeof hd);
  std::memcpy(out.data(), &hd, sizeof hd);
  size_t end = mem.size();
  while (end > 0 && mem[end - 1] == 0) --end;
  out.insert(out.end(), mem.begin(), mem.begin() + static_cast<long>(end));
  return out;
}

// ---- vhost_user_messages: whole sessions ----

class Session {
 public:
  std::vector<uint8_t> out;

  void req(FrontendReq r, bool need_reply = false) { rec(r, {}, need_reply); }
  template <class T>
  void req(FrontendReq r, const T& body, bool need_reply = false, uint8_t aux = 0) {
    rec(r, {reinterpret_cast<const uint8_t*>(&body), sizeof body}, need_reply, aux);
  }
  void rec(FrontendReq r, std::span<const uint8_t> payload, bool need_reply = false, uint8_t aux = 0) {
    fr::append(out, {static_cast<uint32_t>(r), vhu::kVersion | (need_reply ? vhu::kFlagNeedReply : 0u), 0, 0, aux},
               payload);
  }
  template <class T>
  void action(uint32_t a, const T& body, uint32_t flags = 0) {
    fr::append_pod(out, {a, flags, 0, 0, 0}, body);
  }
  void action_bytes(uint32_t a, std::span<const uint8_t> bytes, uint32_t flags = 0) {
    fr::append(out, {a, flags, 0, 0, 0}, bytes);
  }
  // Guest memory bytes, written into region 0 at `offset`.
  void poke(uint64_t offset, std::span<const uint8_t> bytes) {
    std::vector<uint8_t> p(8);
    std::memcpy(p.data(), &offset, 8);
    p.insert(p.end(), bytes.begin(), bytes.end());
    action_bytes(fr::kActionPoke, p);
  }
};

// Guest RAM of the session seeds: one region, guest-physical 0, 1 MiB, at a
// made-up front-end address, as QEMU's memory-backend-memfd is.
constexpr uint64_t kRamBytes = 1 << 20;
constexpr uint64_t kUva = 0x7f1200000000;
constexpr uint32_t kRing = 64;

struct GuestRings {
  std::vector<uint8_t> ram = std::vector<uint8_t>(kRamBytes);
  vhu::DriverQueue q[3];
  uint64_t base[3] = {0x10000, 0x20000, 0x30000};
  GuestRings() {
    for (int i = 0; i < 3; ++i)
      if (!q[i].init(ram.data() + base[i], base[i], kRing, false).ok()) std::abort();
  }
};

void realize(Session& s, uint64_t pf) {
  s.req(FrontendReq::GET_FEATURES);
  s.req(FrontendReq::GET_PROTOCOL_FEATURES);
  s.req(FrontendReq::SET_PROTOCOL_FEATURES, pf);
  s.req(FrontendReq::SET_OWNER);
  s.req(FrontendReq::GET_FEATURES);
  for (uint64_t q = 0; q < 2; ++q) {
    s.req(FrontendReq::SET_VRING_CALL, q);
    s.req(FrontendReq::SET_VRING_ERR, q);
  }
  std::vector<uint8_t> cfg(sizeof(vhu::ConfigHeader) + 8);
  const vhu::ConfigHeader ch{0, 8, 0};
  std::memcpy(cfg.data(), &ch, sizeof ch);
  s.rec(FrontendReq::GET_CONFIG, cfg);
}

// QEMU 7.2's start sequence, with the rings of `g` written into guest RAM.
// kick_aux: each ring's SET_VRING_KICK record aux (kAuxSignal when not given).
void start(Session& s, GuestRings& g, bool event_ring, bool add_mem_reg, std::vector<uint8_t> kick_aux = {}) {
  namespace f = vhu::feature;
  s.req(FrontendReq::SET_FEATURES, vhu::bit(f::VSOCK_F_STREAM) | vhu::bit(f::VSOCK_F_SEQPACKET) |
                                       vhu::bit(f::VHOST_USER_F_PROTOCOL_FEATURES) | vhu::bit(f::VERSION_1));
  s.req(FrontendReq::GET_STATUS);
  s.req(FrontendReq::SET_STATUS, uint64_t{8});
  if (add_mem_reg) {
    s.req(FrontendReq::ADD_MEM_REG, vhu::MemRegionMsg{0, {0, kRamBytes, kUva, 0}}, true);
  } else {
    std::vector<uint8_t> t(8 + sizeof(vhu::MemoryRegion));
    const uint32_t n = 1;
    const vhu::MemoryRegion r{0, kRamBytes, kUva, 0};
    std::memcpy(t.data(), &n, 4);
    std::memcpy(t.data() + 8, &r, sizeof r);
    s.rec(FrontendReq::SET_MEM_TABLE, t, true);
  }
  // The guest's side of RAM: everything up to the last non-zero byte.
  size_t end = g.ram.size();
  while (end > 0 && g.ram[end - 1] == 0) --end;
  for (size_t off = 0; off < end; off += 256) {
    const std::span<const uint8_t> chunk(g.ram.data() + off, std::min<size_t>(256, end - off));
    if (std::any_of(chunk.begin(), chunk.end(), [](uint8_t b) { return b != 0; })) s.poke(off, chunk);
  }
  const unsigned rings = event_ring ? 3 : 2;
  for (unsigned i = 0; i < rings; ++i) {
    s.req(FrontendReq::SET_VRING_NUM, vhu::VringState{i, kRing});
    s.req(FrontendReq::SET_VRING_BASE, vhu::VringState{i, 0});
    s.req(FrontendReq::SET_VRING_ADDR, vhu::VringAddr{i, 0, kUva + g.q[i].desc_gpa(), kUva + g.q[i].used_gpa(),
                                                      kUva + g.q[i].avail_gpa(), g.q[i].used_gpa()});
    s.req(FrontendReq::SET_VRING_KICK, uint64_t{i}, false, i < kick_aux.size() ? kick_aux[i] : fr::kAuxSignal);
  }
  for (unsigned i = 0; i < rings; ++i) s.req(FrontendReq::SET_VRING_ENABLE, vhu::VringState{i, 1}, true);
  for (uint32_t i = 0; i < rings; ++i) s.action(fr::kActionKick, i);
}

void stop(Session& s, bool event_ring) {
  const unsigned rings = event_ring ? 3 : 2;
  for (unsigned i = 0; i < rings; ++i) s.req(FrontendReq::SET_VRING_ENABLE, vhu::VringState{i, 0});
  for (unsigned i = 0; i < rings; ++i) s.req(FrontendReq::GET_VRING_BASE, vhu::VringState{i, 0});
}

// A guest with rx buffers posted and packets queued on tx.
void fill_rings(GuestRings& g, const std::vector<std::pair<vs::Hdr, std::vector<uint8_t>>>& pkts, int events) {
  uint64_t at = 0x40000;
  for (int i = 0; i < 16; ++i, at += 4096) {
    vhu::DriverBuffer b{at, 4096, true};
    (void)g.q[vs::kRxQueue].add({&b, 1});
  }
  g.q[vs::kRxQueue].publish();
  for (const auto& [h, payload] : pkts) {
    const auto hb = vs::encode(h);
    std::memcpy(g.ram.data() + at, hb.data(), hb.size());
    if (!payload.empty()) std::memcpy(g.ram.data() + at + hb.size(), payload.data(), payload.size());
    vhu::DriverBuffer b{at, static_cast<uint32_t>(hb.size() + payload.size()), false};
    (void)g.q[vs::kTxQueue].add({&b, 1});
    at += 4096;
  }
  g.q[vs::kTxQueue].publish();
  for (int i = 0; i < events; ++i, at += 64) {
    vhu::DriverBuffer b{at, 8, true};
    (void)g.q[vs::kEventQueue].add({&b, 1});
  }
  g.q[vs::kEventQueue].publish();
}

constexpr uint64_t kAllPf = vhu::bit(vhu::protocol_feature::MQ) | vhu::bit(vhu::protocol_feature::REPLY_ACK) |
                            vhu::bit(vhu::protocol_feature::CONFIG) | vhu::bit(vhu::protocol_feature::RESET_DEVICE) |
                            vhu::bit(vhu::protocol_feature::CONFIGURE_MEM_SLOTS) |
                            vhu::bit(vhu::protocol_feature::STATUS) | vhu::bit(vhu::protocol_feature::DEVICE_STATE);

void message_seeds(const fs::path& dir) {
  const std::vector<uint8_t> hello = {'h', 'e', 'l', 'l', 'o'};
  {  // realize, start, packets both ways, stop
    Session s;
    GuestRings g;
    fill_rings(g, {{packet(vs::Op::REQUEST, 5000, 1234), {}}, {packet(vs::Op::RW, 5000, 1234, 5), hello},
                   {packet(vs::Op::RST, 5001, 1234), {}}},
               0);
    realize(s, kAllPf);
    start(s, g, false, false);
    stop(s, false);
    write_file(dir / "seed-start-datapath-stop", s.out);
  }
  {  // ADD_MEM_REG instead of SET_MEM_TABLE, event ring handed over, reset
    Session s;
    GuestRings g;
    fill_rings(g, {{packet(vs::Op::REQUEST, 5000, 1234, 0, vs::kTypeSeqpacket), {}}}, 4);
    realize(s, kAllPf);
    s.req(FrontendReq::GET_QUEUE_NUM);
    s.req(FrontendReq::GET_MAX_MEM_SLOTS);
    start(s, g, true, true);
    s.req(FrontendReq::RESET_DEVICE, true);
    s.req(FrontendReq::REM_MEM_REG, vhu::MemRegionMsg{0, {0, kRamBytes, kUva, 0}}, true);
    write_file(dir / "seed-add-mem-reg-reset", s.out);
  }
  {  // save, then load into the same session, then restart: TRANSPORT_RESET on the event ring
    Session s;
    GuestRings g;
    fill_rings(g, {}, 4);
    realize(s, kAllPf);
    start(s, g, true, false);
    stop(s, true);
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferSave, vhu::kPhaseStopped});
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferLoad, vhu::kPhaseStopped});
    vsockref::DeviceState st;
    st.guest_cid = 3;
    st.features = vhu::bit(vhu::feature::VERSION_1) | vhu::bit(vhu::feature::VSOCK_F_STREAM);
    st.protocol_features = kAllPf;
    st.config = {3};
    s.action_bytes(fr::kActionStatePipe, vsockref::serialize_device_state(st), 1);
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    GuestRings g2;
    fill_rings(g2, {}, 4);
    start(s, g2, true, false);
    std::vector<uint8_t> cfg(sizeof(vhu::ConfigHeader) + 8);
    const vhu::ConfigHeader ch{0, 8, 0};
    std::memcpy(cfg.data(), &ch, sizeof ch);
    s.rec(FrontendReq::GET_CONFIG, cfg);
    write_file(dir / "seed-save-load-restart", s.out);
  }
  {  // fds of the wrong kind where eventfds belong: the back-end polls a ring it cannot watch, drops a hung-up one
    Session s;
    GuestRings g;
    fill_rings(g, {{packet(vs::Op::REQUEST, 5000, 1234), {}}}, 2);
    realize(s, kAllPf);
    start(s, g, true, false, {fr::kAuxSignal, fr::kAuxRegularFile, fr::kAuxHungUp});
    s.req(FrontendReq::SET_VRING_CALL, uint64_t{0}, false, fr::kAuxHungUp);
    s.req(FrontendReq::SET_VRING_ERR, uint64_t{1}, false, fr::kAuxRegularFile);
    s.req(FrontendReq::GET_VRING_BASE, vhu::VringState{1, 0});
    write_file(dir / "seed-odd-eventfds", s.out);
  }
  {  // loads a migration source could send that this back-end must refuse, each answered by CHECK_DEVICE_STATE
    Session s;
    realize(s, kAllPf);
    vsockref::DeviceState st;
    st.guest_cid = 3;
    st.features = vhu::bit(vhu::feature::VERSION_1) | vhu::bit(vhu::feature::RING_PACKED);  // not offered
    st.protocol_features = kAllPf;
    st.config = {3};
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferLoad, vhu::kPhaseStopped});
    s.action_bytes(fr::kActionStatePipe, vsockref::serialize_device_state(st), 1);
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    st.features = vhu::bit(vhu::feature::VERSION_1);
    st.protocol_features = kAllPf | (uint64_t{1} << 63);  // a protocol feature nobody offers
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferLoad, vhu::kPhaseStopped});
    s.action_bytes(fr::kActionStatePipe, vsockref::serialize_device_state(st), 1);
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferLoad, vhu::kPhaseStopped});
    // More than a load reads, in two records: one record carries at most fr::kMaxPayload bytes.
    s.action_bytes(fr::kActionStatePipe, std::vector<uint8_t>(fr::kMaxPayload, 0x5a));
    s.action_bytes(fr::kActionStatePipe, std::vector<uint8_t>(vsockref::kDeviceStateMaxBytes + 1 - fr::kMaxPayload, 0x5a), 1);
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    write_file(dir / "seed-load-refused", s.out);
  }
  {  // every request id once, need_reply set, with a payload of its size
    Session s;
    s.req(FrontendReq::SET_PROTOCOL_FEATURES, kAllPf);
    for (const vhu::RequestInfo& r : vhu::all_requests(vhu::Plane::Frontend)) {
      auto n = vhu::fixed_payload_size(r.request);
      std::vector<uint8_t> payload(n ? *n : 20);
      fr::append(s.out, {r.id, vhu::kVersion | vhu::kFlagNeedReply, 0, 0, 0}, payload);
    }
    write_file(dir / "seed-every-request", s.out);
  }
  {  // a session the front-end drops half-way, then a new one
    Session s;
    realize(s, kAllPf);
    s.action(fr::kActionDisconnect, uint32_t{0});
    realize(s, 0);
    write_file(dir / "seed-reconnect", s.out);
  }
}

// ---- vhost_user_socket: the message sessions, plus the stream and the host side ----

using fr::kActionRaw;
constexpr uint32_t kActionHost = fr::kActionBase + 6;  // vhost_user_socket.cpp

std::vector<uint8_t> text(std::string_view s) { return {s.begin(), s.end()}; }

void socket_seeds(const fs::path& dir) {
  vhu::Header get_features{static_cast<uint32_t>(FrontendReq::GET_FEATURES), vhu::kVersion | vhu::kFlagNeedReply, 0};
  const auto* gf = reinterpret_cast<const uint8_t*>(&get_features);
  {  // a message split across two writes, then one cut short by a hang-up
    Session s;
    s.action_bytes(kActionRaw, {gf, 5});
    s.action_bytes(kActionRaw, {gf + 5, sizeof get_features - 5});
    s.req(FrontendReq::GET_PROTOCOL_FEATURES);
    s.action_bytes(kActionRaw, {gf, 7});
    s.action(fr::kActionDisconnect, uint32_t{0});
    realize(s, 0);
    write_file(dir / "seed-split-and-truncated", s.out);
  }
  {  // a size field over the limit: the stream cannot be trusted any more
    Session s;
    vhu::Header big{static_cast<uint32_t>(FrontendReq::SET_CONFIG), vhu::kVersion, 5000};
    s.req(FrontendReq::GET_FEATURES);
    s.action_bytes(kActionRaw, {reinterpret_cast<const uint8_t*>(&big), sizeof big});
    s.req(FrontendReq::GET_FEATURES);
    write_file(dir / "seed-oversized", s.out);
  }
  {  // fds on a request that takes none, and two messages in one write
    Session s;
    std::vector<uint8_t> two(gf, gf + sizeof get_features);
    two.insert(two.end(), gf, gf + sizeof get_features);
    fr::append(s.out, {kActionRaw, 0, 0, 3, 0}, two);
    fr::append(s.out, {static_cast<uint32_t>(FrontendReq::SET_OWNER), vhu::kVersion, 0, 2, 0}, {});
    write_file(dir / "seed-surplus-fds-pipelined", s.out);
  }
  {  // host programs: a good CONNECT with data behind it, then lines the handshake refuses
    Session s;
    GuestRings g;
    fill_rings(g, {}, 0);
    realize(s, kAllPf);
    start(s, g, false, false);
    s.action_bytes(kActionHost, text("CONNECT 1234\nhello"));
    s.action_bytes(kActionHost, text("CONNECT 1235\r\n"));
    s.action_bytes(kActionHost, text("CONNECT 99999999999\n"));
    s.action_bytes(kActionHost, text("CONNECT x\n"));
    s.action_bytes(kActionHost, text("HELLO\n"));
    s.action_bytes(kActionHost, text("CONNECT 12"), 1);
    s.action_bytes(kActionHost, std::vector<uint8_t>(80, '1'));
    s.action_bytes(kActionHost, text("CONNECT 4294967296\n"));                      // ten digits, past 32 bits
    s.action_bytes(kActionHost, text("CONNECT " + std::string(70, '0')));           // no newline within the limit
    s.action(fr::kActionKick, uint32_t{0});
    stop(s, false);
    write_file(dir / "seed-host-connect", s.out);
  }
  {  // a load the front-end never finishes writing: the reply waits, the back-end reads nothing meanwhile
    Session s;
    realize(s, kAllPf);
    s.req(FrontendReq::SET_DEVICE_STATE_FD, vhu::DeviceStateParams{vhu::kTransferLoad, vhu::kPhaseStopped});
    s.action_bytes(fr::kActionStatePipe, text("VHUV"));
    s.req(FrontendReq::CHECK_DEVICE_STATE);
    s.req(FrontendReq::GET_FEATURES);
    write_file(dir / "seed-deferred-check", s.out);
  }
}

// ---- vsock_packets ----

class Conversation {
 public:
  std::vector<uint8_t> out;
  void tx(const vs::Hdr& h, std::span<const uint8_t> payload = {}, bool split = false, bool indirect = false) {
    out.push_back(static_cast<uint8_t>(0 | (split ? 0x40 : 0) | (indirect ? 0x10 : 0)));
    const auto hb = vs::encode(h);
    out.insert(out.end(), hb.begin(), hb.end());
    put16(static_cast<uint16_t>(payload.size()));
    out.insert(out.end(), payload.begin(), payload.end());
  }
  void rx_post(uint8_t count, uint16_t size, bool split = false) {
    out.push_back(1);
    out.push_back(static_cast<uint8_t>((count - 1) | (split ? 0x80 : 0)));
    put16(size);
  }
  void host_connect(uint32_t guest_port) {
    out.push_back(2);
    put32(guest_port);
  }
  void host_write(uint8_t peer, std::span<const uint8_t> bytes) {
    out.push_back(3);
    out.push_back(peer);
    put16(static_cast<uint16_t>(bytes.size()));
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  void host_read(uint8_t peer, uint16_t n) {
    out.push_back(4);
    out.push_back(peer);
    put16(n);
  }
  void host_shut(uint8_t peer, uint8_t how) {
    out.push_back(5);
    out.push_back(peer);
    out.push_back(how);
  }
  void simple(uint8_t op) { out.push_back(op); }
  void event_post(uint8_t n) {
    out.push_back(11);
    out.push_back(static_cast<uint8_t>(n - 1));
  }
  // The records that follow act on VM 0 (CID 3) or its sibling, VM 1 (CID 4).
  void select(uint8_t vm) {
    out.push_back(13);
    out.push_back(vm);
  }

 private:
  void put16(uint16_t v) { out.insert(out.end(), {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)}); }
  void put32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
};

vs::Hdr credit(vs::Hdr h, uint32_t buf_alloc, uint32_t fwd_cnt) {
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

void vsock_seeds(const fs::path& dir) {
  const std::vector<uint8_t> data(1000, 'x');
  {  // guest connects to a host listener, sends, host replies, credit, shutdown
    Conversation c;
    c.rx_post(4, 4096, true);  // header and payload in two descriptors
    c.rx_post(4, 4096);
    c.tx(packet(vs::Op::REQUEST, 5000, 1024));
    c.tx(packet(vs::Op::RW, 5000, 1024, 1000), data);
    c.host_write(0, data);
    c.host_read(0, 2000);
    c.tx(credit(packet(vs::Op::CREDIT_UPDATE, 5000, 1024), 64 * 1024, 1000));
    c.tx(packet(vs::Op::CREDIT_REQUEST, 5000, 1024));
    c.tx(packet(vs::Op::SHUTDOWN, 5000, 1024), {}, false);
    c.rx_post(4, 4096);
    c.host_shut(0, 2);
    c.rx_post(4, 4096);
    write_file(dir / "seed-guest-connect", c.out);
  }
  {  // host connects in, guest accepts with little credit, host writes more than that
    Conversation c;
    c.rx_post(16, 2048);
    c.host_connect(5000);
    c.tx(credit(packet(vs::Op::RESPONSE, 5000, 1u << 30), 1500, 0));
    c.host_write(0, data);
    c.host_write(0, data);
    c.rx_post(4, 2048);
    c.tx(credit(packet(vs::Op::CREDIT_UPDATE, 5000, 1u << 30), 1500, 1000));
    c.rx_post(4, 2048);
    c.tx(credit(packet(vs::Op::RST, 5000, 1u << 30), 1500, 1000));
    write_file(dir / "seed-host-connect-credit", c.out);
  }
  {  // seqpacket messages both ways, split descriptors, overrunning credit
    Conversation c;
    c.rx_post(8, 4096);
    c.tx(packet(vs::Op::REQUEST, 6000, 1025, 0, vs::kTypeSeqpacket));
    vs::Hdr rw = packet(vs::Op::RW, 6000, 1025, 1000, vs::kTypeSeqpacket);
    rw.flags = vs::kSeqEom;
    c.tx(rw, data, true);
    c.host_write(0, data);
    c.host_read(0, 4096);
    for (int i = 0; i < 5; ++i) c.tx(rw, data);
    c.rx_post(8, 64);
    write_file(dir / "seed-seqpacket", c.out);
  }
  {  // seqpacket messages of no bytes both ways, each between two with bytes
    Conversation c;
    c.rx_post(8, 4096);
    c.tx(packet(vs::Op::REQUEST, 6001, 1025, 0, vs::kTypeSeqpacket));
    vs::Hdr empty = packet(vs::Op::RW, 6001, 1025, 0, vs::kTypeSeqpacket);
    empty.flags = vs::kSeqEom;
    vs::Hdr rw = packet(vs::Op::RW, 6001, 1025, 100, vs::kTypeSeqpacket);
    rw.flags = vs::kSeqEom;
    c.tx(rw, std::span<const uint8_t>(data).first(100));
    c.tx(empty);
    c.host_write(0, {});
    c.host_write(0, std::span<const uint8_t>(data).first(100));
    c.host_read(0, 4096);
    c.host_read(0, 4096);
    c.tx(empty);
    c.tx(rw, std::span<const uint8_t>(data).first(100));
    c.host_write(0, {});
    write_file(dir / "seed-seqpacket-empty", c.out);
  }
  {  // a host message of no bytes and then the host's close: both read as 0 bytes
    Conversation c;
    c.rx_post(8, 4096);
    c.tx(packet(vs::Op::REQUEST, 6002, 1025, 0, vs::kTypeSeqpacket));
    c.host_write(0, {});
    c.host_shut(0, 2);
    c.rx_post(8, 4096);
    write_file(dir / "seed-seqpacket-empty-then-close", c.out);
  }
  {  // a load: TRANSPORT_RESET on the event ring, host connects held until the config read
    Conversation c;
    c.simple(7);
    c.host_connect(5000);
    c.event_post(2);
    c.rx_post(4, 4096);
    c.simple(8);
    c.tx(credit(packet(vs::Op::RESPONSE, 5000, 1u << 30), 4096, 0));
    c.simple(9);
    write_file(dir / "seed-load-reset", c.out);
  }
  {  // unknown type, spoofed CID, no route, a guest that lies about len
    Conversation c;
    c.rx_post(8, 4096);
    c.tx(packet(vs::Op::REQUEST, 7000, 1024, 0, 9));
    vs::Hdr spoof = packet(vs::Op::REQUEST, 7000, 1024);
    spoof.src_cid = 4;
    c.tx(spoof);
    vs::Hdr away = packet(vs::Op::REQUEST, 7000, 1024);
    away.dst_cid = 77;
    c.tx(away);
    c.tx(packet(vs::Op::RW, 7000, 1024, 4000), data);
    c.tx(packet(vs::Op::REQUEST, 7000, 99));
    write_file(dir / "seed-refusals", c.out);
  }
  {  // sibling guests: a stream from CID 3 to CID 4 through the relay, and back
    auto between = [](vs::Op op, uint64_t from, uint32_t src_port, uint32_t dst_port, uint32_t len = 0,
                      uint16_t type = vs::kTypeStream) {
      vs::Hdr h = packet(op, src_port, dst_port, len, type);
      h.src_cid = from;
      h.dst_cid = from == 3 ? 4 : 3;
      return h;
    };
    Conversation c;
    c.rx_post(8, 4096);
    c.select(1);
    c.rx_post(8, 4096);
    c.select(0);
    c.tx(between(vs::Op::REQUEST, 3, 8000, 9000));
    c.select(1);
    c.tx(between(vs::Op::RESPONSE, 4, 9000, 8000));
    c.select(0);
    c.tx(between(vs::Op::RW, 3, 8000, 9000, 1000), data);
    c.rx_post(4, 256);  // smaller than what comes back: the relay cuts it
    c.select(1);
    c.tx(between(vs::Op::RW, 4, 9000, 8000, 1000), data, true, true);  // split, in an indirect table
    vs::Hdr seq = between(vs::Op::RW, 4, 9001, 8001, 1000, vs::kTypeSeqpacket);
    seq.flags = vs::kSeqEom;
    c.tx(seq, data);
    c.tx(between(vs::Op::SHUTDOWN, 4, 9000, 8000));
    c.select(0);
    c.tx(between(vs::Op::RST, 3, 8000, 9000));
    write_file(dir / "seed-siblings", c.out);
    // The relay's packet share: CID 4's guest offers a buf_alloc of 4 KiB (4
    // packets of PeerCredit's 1 KiB), CID 3 sends 8 small RWs on that flow and
    // one on another; the flow held at 4 does not hold the other, and CID 4's
    // CREDIT_UPDATE lets the rest through.
    Conversation d;
    d.rx_post(8, 4096);
    d.select(1);
    d.rx_post(16, 4096);
    d.select(0);
    d.tx(between(vs::Op::REQUEST, 3, 8100, 9100));
    d.tx(between(vs::Op::REQUEST, 3, 8101, 9101));
    d.select(1);
    d.tx(credit(between(vs::Op::RESPONSE, 4, 9100, 8100), 4096, 0));
    d.tx(between(vs::Op::RESPONSE, 4, 9101, 8101));
    d.select(0);
    const std::vector<uint8_t> few(10, 'y');
    for (int i = 0; i < 8; ++i) d.tx(between(vs::Op::RW, 3, 8100, 9100, 10), few);
    d.tx(between(vs::Op::RW, 3, 8101, 9101, 10), few);
    d.select(1);
    d.tx(credit(between(vs::Op::CREDIT_UPDATE, 4, 9100, 8100), 4096, 40));
    write_file(dir / "seed-siblings-packet-share", d.out);
  }
  {  // the guest closes both ways while the host program has not read what it sent: flushed, then RST
    Conversation c;
    c.rx_post(8, 4096);
    c.tx(packet(vs::Op::REQUEST, 5100, 1024));
    for (int i = 0; i < 4; ++i) c.tx(packet(vs::Op::RW, 5100, 1024, 1000), data);  // more than the 4 KiB socket takes
    vs::Hdr bye = packet(vs::Op::SHUTDOWN, 5100, 1024);
    bye.flags = vs::kShutdownRcv | vs::kShutdownSend;
    c.tx(bye);
    c.host_read(0, 4096);
    c.simple(12);
    c.host_read(0, 4096);
    c.simple(12);
    write_file(dir / "seed-close-while-flushing", c.out);
  }
}

// ---- device_state_load ----

void device_state_seeds(const fs::path& dir) {
  vsockref::DeviceState s;
  s.guest_cid = 3;
  s.features = vhu::bit(vhu::feature::VERSION_1);
  s.protocol_features = kAllPf;
  s.config = {3};
  auto blob = vsockref::serialize_device_state(s);
  std::vector<uint8_t> as_is = {0};
  as_is.insert(as_is.end(), blob.begin(), blob.end());
  write_file(dir / "seed-valid", as_is);
  s.transport_reset_pending = true;
  s.guest_cid = 0xfffffffe;
  blob = vsockref::serialize_device_state(s);
  std::vector<uint8_t> fixed = {1};
  fixed.insert(fixed.end(), blob.begin(), blob.end());
  write_file(dir / "seed-crc-fixed", fixed);
}

// ---- command_line ----

// Arguments after the program name, NUL-separated, as the target splits them.
std::vector<uint8_t> argv_seed(std::initializer_list<std::string_view> args) {
  std::vector<uint8_t> out;
  for (std::string_view a : args) {
    if (!out.empty()) out.push_back(0);
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

void command_line_seeds(const fs::path& dir) {
  // The runner's ref profile and the README's forms.
  write_file(dir / "seed-one-vm",
             argv_seed({"--spec", "upstream", "--socket", "/tmp/c/vu.sock", "--uds-path", "/tmp/c/vsock.uds",
                        "--guest-cid", "1003"}));
  write_file(dir / "seed-siblings",
             argv_seed({"--spec", "newest", "--vm", "guest-cid=1003,socket=/tmp/c/a.sock,uds-path=/tmp/c/a.uds,groups=conform",
                        "--vm", "guest-cid=1004,socket=/tmp/c/b.sock,uds-path=/tmp/c/b.uds,groups=conform+other"}));
  write_file(dir / "seed-vm-all-keys",
             argv_seed({"--vm", "guest_cid=5,socket=/s,uds_path=/u,groups=a,tx_buffer_size=65536,queue_size=256",
                        "--log-level", "trace"}));
  write_file(dir / "seed-client-options",
             argv_seed({"--client", "--socket", "/tmp/fe.sock", "--guest-cid", "3", "--groups", "a+b",
                        "--tx-buffer-size", "1048576", "--queue-size", "32768"}));
  write_file(dir / "seed-help", argv_seed({"--help"}));
}

// ---- backend_replies ----

// What a back-end writes and what the runner then asks, in the target's records.
class Replies {
 public:
  std::vector<uint8_t> out;

  // A reply (or back-end request, on_backend_req) as the back-end writes it.
  template <class T>
  void write(uint32_t request, const T& body, bool on_backend_req = false, uint8_t fds = 0,
             uint32_t flags = vhu::kVersion | vhu::kFlagReply) {
    vhu::Header h{request, flags, static_cast<uint32_t>(sizeof body)};
    std::vector<uint8_t> bytes(sizeof h + sizeof body);
    std::memcpy(bytes.data(), &h, sizeof h);
    std::memcpy(bytes.data() + sizeof h, &body, sizeof body);
    out.push_back(on_backend_req ? 4 : 0);
    out.push_back(fds);
    put(static_cast<uint16_t>(bytes.size()));
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  void typed(uint8_t which, uint32_t arg = 0) {
    out.push_back(1);
    out.push_back(which);
    put(arg);
  }
  void try_request(uint32_t id, uint32_t flags) {
    out.push_back(2);
    put(id);
    put(flags);
  }
  void negotiate(uint64_t pf) {
    out.push_back(5);
    put(pf);
  }

 private:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
  }
};

void backend_replies_seeds(const fs::path& dir) {
  const auto id = [](FrontendReq r) { return static_cast<uint32_t>(r); };
  Replies ok;  // a well-behaved back-end answering the runner's handshake
  ok.write(id(FrontendReq::GET_FEATURES), uint64_t{0x1'7000'0003});
  ok.typed(0);
  ok.write(id(FrontendReq::GET_PROTOCOL_FEATURES), kAllPf);
  ok.typed(1);
  ok.negotiate(kAllPf);
  ok.write(id(FrontendReq::SET_FEATURES), uint64_t{0});
  ok.typed(7, 0x3);
  ok.write(id(FrontendReq::GET_VRING_BASE), vhu::VringState{1, 42});
  ok.typed(4, 1);
  struct {
    vhu::ConfigHeader h{0, 8, 0};
    uint64_t cid = 3;
  } config;
  ok.write(id(FrontendReq::GET_CONFIG), config);
  ok.typed(5, 8 << 8);
  ok.write(id(FrontendReq::GET_STATUS), uint64_t{0xf});
  ok.typed(6);
  write_file(dir / "seed-handshake", ok.out);

  Replies odd;  // the ways real back-ends get it wrong
  odd.write(id(FrontendReq::GET_FEATURES), uint64_t{1}, false, 0, vhu::kVersion);  // reply flag missing
  odd.typed(0);
  odd.write(id(FrontendReq::GET_QUEUE_NUM), uint64_t{3}, false, 2);  // fds on a reply that takes none
  odd.typed(2);
  odd.write(id(FrontendReq::GET_MAX_MEM_SLOTS), uint32_t{8});  // a u32 where a u64 belongs
  odd.typed(3);
  odd.write(999u, uint64_t{0});  // an unknown request echoed
  odd.try_request(999, vhu::kFlagNeedReply);
  write_file(dir / "seed-odd-replies", odd.out);

  Replies req;  // back-end requests on the BACKEND_REQ channel
  req.write(static_cast<uint32_t>(vhu::BackendReq::BACKEND_VRING_CALL), vhu::VringState{0, 0}, true, 0,
            vhu::kVersion);
  req.write(static_cast<uint32_t>(vhu::BackendReq::BACKEND_CONFIG_CHANGE_MSG), uint64_t{0}, true, 1,
            vhu::kVersion | vhu::kFlagNeedReply);
  write_file(dir / "seed-backend-requests", req.out);
}

}  // namespace

int main(int argc, char** argv) {
  // An option is not a directory: `--help` once wrote a corpus into ./--help.
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\nWrites the generated seeds of every fuzz target (seed-*) into "
                 "CORPUS_DIR/<target>/.\n", argv[0]);
    return argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") ? 0 : 2;
  }
  const fs::path dir = fs::path(argv[1]) / "vring";
  write_file(dir / "seed-one-readable", vring_seed(4, 0, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b{kData, 64, false};
               (void)q.add({&b, 1});
             }));
  write_file(dir / "seed-read-then-write", vring_seed(4, kFlagEventIdx, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kData, 44, false}, {kData + 64, 100, false}, {kData + 256, 512, true}};
               (void)q.add(b);
               (void)q.add(b);
             }));
  write_file(dir / "seed-cross-region", vring_seed(3, 0, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kRegion1Gpa - 100, 200, true}};
               (void)q.add(b);
             }));
  write_file(dir / "seed-indirect", vring_seed(5, kFlagIndirect | kFlagEventIdx, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kData, 44, false}, {kData + 64, 64, true}, {kData + 128, 64, true}};
               (void)q.add(b, true);
               (void)q.add(b, false);
             }));
  write_file(dir / "seed-full-ring", vring_seed(7, 0, [](vhu::DriverQueue& q) {
               for (int i = 0; i < 128; ++i) {
                 vhu::DriverBuffer b{kData + 16u * static_cast<unsigned>(i), 16, (i & 1) != 0};
                 (void)q.add({&b, 1});
               }
             }));
  const std::vector<vs::Hdr> pkts = {packet(vs::Op::REQUEST, 5000, 1234), packet(vs::Op::RW, 5000, 1234, 16),
                                     packet(vs::Op::RST, 5000, 1234)};
  write_file(dir / "seed-vsock-tx", vring_vsock_packets(pkts));
  message_seeds(fs::path(argv[1]) / "vhost_user_messages");
  socket_seeds(fs::path(argv[1]) / "vhost_user_socket");
  vsock_seeds(fs::path(argv[1]) / "vsock_packets");
  device_state_seeds(fs::path(argv[1]) / "device_state_load");
  command_line_seeds(fs::path(argv[1]) / "command_line");
  backend_replies_seeds(fs::path(argv[1]) / "backend_replies");
  std::printf("seeds written to %s\n", argv[1]);
  return 0;
}
