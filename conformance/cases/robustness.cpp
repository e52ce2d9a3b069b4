// Bad input at both levels: malformed vhost-user messages from the front-end
// and malformed rings from the guest. Messages that memory.*, vrings.* and
// handshake.* already send (fd count of SET_MEM_TABLE, bad regions, ring
// index the back-end lacks in NUM/CALL/GET_VRING_BASE, unknown ids) are not repeated here.
//
// The verdict is the same everywhere: the back-end does not crash, does not
// hang (a later request is answered), writes nothing outside what it was
// given, does not act on the malformed request, refuses it visibly (non-zero
// REPLY_ACK or a closed connection; for rings see VU-VRING-ERR and the
// requirements comment), and serves a fresh connection afterwards.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "robustness_util.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace vs = vhu::vsock;
namespace vr = vhu::vring;

// The part of a table-driven case's name after the family: "short_payload.set_features" -> "set_features".
std::string tail(Ctx& ctx) {
  const std::string n = ctx.info().name();
  return n.substr(n.find('.') + 1);
}

bool send_raw(Frontend& fe, const void* p, size_t n) {
  fe.log().record_text(Dir::ToBackend, fmt::format("({} raw bytes)", n));
  return ::send(fe.fd(), p, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
}

std::vector<uint8_t> wire(const Message& m) {
  std::vector<uint8_t> out(sizeof(vhu::Header) + m.payload.size());
  std::memcpy(out.data(), &m.hdr, sizeof(vhu::Header));
  if (!m.payload.empty()) std::memcpy(out.data() + sizeof(vhu::Header), m.payload.data(), m.payload.size());
  return out;
}

// True when the peer closed the socket within `ms`; a message in the meantime fails.
bool closed_within(Ctx& ctx, int ms, const std::string& what) {
  auto& fe = ctx.fe();
  auto r = fe.try_recv(ms);
  if (!r && r.error().kind == vhu::ErrorKind::Timeout) return false;
  if (r) fail(fmt::format("no message after {}", what), vhu::describe(vhu::Plane::Frontend, *r));
  return true;
}

// ---- framing ----

CONFORM_CASE(split_and_truncated_header,
             .id = "robustness.split_and_truncated_header",
             .requirements = {"VU-MSG-FRAMING", "VU-ERROR-CLOSE", "VU-RECONNECT"},
             .summary = "a header in two writes is one message; a header or payload cut off by a close leaves the "
                        "back-end serving the next connection") {
  auto& fe = ctx.fe();
  fe.get_features();
  // libvhost-user takes a 6-byte fragment for a whole message (INTEROP.md).
  auto bytes = wire(Message::empty(req(FrontendReq::GET_FEATURES)));
  check(send_raw(fe, bytes.data(), 6), "the back-end to take 6 header bytes", "send failed");
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  check(send_raw(fe, bytes.data() + 6, bytes.size() - 6), "the back-end to take the rest of the header", "send failed");
  Message r = fe.expect_reply(req(FrontendReq::GET_FEATURES), "the GET_FEATURES reply to a header sent in two writes");
  check(r.payload.size() == 8, "a u64 GET_FEATURES reply", fmt::format("{} payload bytes", r.payload.size()));
  // The front-end dies inside a header, then inside a payload.
  for (int round = 0; round < 2; ++round) {
    auto& f = ctx.fe();
    auto m = wire(Message::request_with(req(FrontendReq::SET_FEATURES), uint64_t{0}));
    const size_t cut = round == 0 ? 6 : sizeof(vhu::Header) + 3;
    send_raw(f, m.data(), cut);
    fresh_connection_or_skip(ctx, round == 0 ? "after the front-end closed 6 bytes into a header"
                                             : "after the front-end closed 3 bytes into a payload");
    // One front-end at a time: this answer comes only once the dead one is dropped.
    auto o = ctx.fe().try_request(Message::empty(req(FrontendReq::GET_FEATURES)), 1000);
    check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
          fmt::format("GET_FEATURES answered on a new connection after one closed {}",
                      round == 0 ? "6 bytes into a header" : "3 bytes into a payload"),
          o.text);
  }
  expect_fresh_connection_works(ctx, "after truncated messages");
}

CONFORM_CASE(oversized_size,
             .id = "robustness.oversized_size",
             .requirements = {"VU-MSG-FRAMING", "VU-ERROR-CLOSE"},
             .summary = "a header whose size field no request can have (0xfffffff0) closes the connection; the "
                        "back-end neither waits for 4 GiB nor allocates it") {
  ctx.handshake();
  Message m = Message::request_with(req(FrontendReq::SET_FEATURES), uint64_t{0});
  m.hdr.size = 0xfffffff0u;
  auto bytes = wire(m);
  send_raw(ctx.fe(), bytes.data(), bytes.size());
  const bool closed = closed_within(ctx, 1000, "a header with size 0xfffffff0");
  check(!ctx.backend().crashed(), "the back-end to survive a header with size 0xfffffff0", ctx.backend().status_text());
  check(closed, "the connection closed: no request has a 4 GiB payload, so framing is lost",
        "still open after 1000 ms (the back-end waits for the payload)");
  expect_fresh_connection_works(ctx, "after an oversized size field");
}

// ---- payload size ----

struct BadPayload {
  const char* name;
  FrontendReq request;
  size_t bytes;       // payload bytes actually sent
  int fds = 0;        // eventfds attached
};

const BadPayload kShort[] = {
    {"set_features", FrontendReq::SET_FEATURES, 4},
    {"set_vring_num", FrontendReq::SET_VRING_NUM, 4},
    {"set_vring_addr", FrontendReq::SET_VRING_ADDR, 24},
    {"set_vring_call", FrontendReq::SET_VRING_CALL, 4, 1},
};

void short_payload(Ctx& ctx, const BadPayload& b) {
  ctx.handshake();
  auto& fe = ctx.fe();
  // All zero: ring 0, value 0. Only the length is wrong.
  Message m = Message::empty(req(b.request));
  m.set_payload_bytes(std::vector<uint8_t>(b.bytes, 0));
  for (int i = 0; i < b.fds; ++i) m.fds.push_back(make_eventfd());
  // A back-end that reads the size the request takes, not the size the header
  // says, waits here for bytes that never come: don't wait the full timeout.
  fe.set_reply_timeout_ms(700);
  expect_refused(ctx, std::move(m),
                 fmt::format("{} with a {}-byte payload", vhu::request_name(b.request), b.bytes));
  expect_fresh_connection_works(ctx, "after a short payload");
}

const BadPayload kLong[] = {
    {"set_features", FrontendReq::SET_FEATURES, 8},
    {"set_vring_num", FrontendReq::SET_VRING_NUM, 8},
    {"set_vring_base", FrontendReq::SET_VRING_BASE, 8},
};

void long_payload(Ctx& ctx, const BadPayload& b) {
  ctx.handshake();
  auto& fe = ctx.fe();
  // The request's own payload, then 12 bytes that form a GET_FEATURES header:
  // a back-end that reads only what the request takes parses them as the next
  // message and answers it.
  std::vector<uint8_t> p(b.bytes, 0);
  if (b.request == FrontendReq::SET_FEATURES) {
    const uint64_t f = minimal_features(fe);
    std::memcpy(p.data(), &f, 8);
  } else {
    const vhu::VringState s{0, b.request == FrontendReq::SET_VRING_NUM ? 64u : 0u};
    std::memcpy(p.data(), &s, 8);
  }
  auto smuggled = wire(Message::empty(req(FrontendReq::GET_FEATURES)));
  p.insert(p.end(), smuggled.begin(), smuggled.end());
  Message m = Message::empty(req(b.request), fe.reply_ack());
  m.set_payload_bytes(p);
  const std::string what = fmt::format("{} with {} payload bytes ({} more than it takes)", vhu::request_name(b.request),
                                       p.size(), smuggled.size());
  auto o = fe.try_request(m, 700);
  if (o.kind == Outcome::Closed) {
    check(!ctx.backend().crashed(), "the back-end to survive " + what, ctx.backend().status_text());
    ctx.note("the back-end closed the connection on " + what + " (allowed)");
  } else {
    if (m.need_reply())
      check(o.kind == Outcome::Reply, "a REPLY_ACK (0 or non-zero) for " + what, o.text);
    if (auto extra = fe.unsolicited(100))
      fail("no further message: the surplus bytes are part of the payload, not a request",
           vhu::describe(vhu::Plane::Frontend, *extra));
    expect_survived(ctx, what);
  }
  expect_fresh_connection_works(ctx, "after an over-long payload");
}

// ---- fds ----

struct MissingFd {
  const char* name;
  FrontendReq request;
};
const MissingFd kMissingFd[] = {
    {"set_vring_call", FrontendReq::SET_VRING_CALL},
    {"set_vring_kick", FrontendReq::SET_VRING_KICK},
    {"set_vring_err", FrontendReq::SET_VRING_ERR},
};

void missing_fd(Ctx& ctx, const MissingFd& b) {
  ctx.handshake();
  // Neither an fd nor the invalid-FD flag (bit 8): the message contradicts itself.
  expect_refused(ctx, Message::request_with(req(b.request), uint64_t{0}),
                 fmt::format("{} for ring 0 with no fd and no invalid-FD flag", vhu::request_name(b.request)));
  expect_fresh_connection_works(ctx, "after a message missing its fd");
}

// ---- ring indices not covered by vrings.index_out_of_range ----

struct BadIndex {
  const char* name;
  FrontendReq request;
};
const BadIndex kBadIndex[] = {
    {"set_vring_addr", FrontendReq::SET_VRING_ADDR}, {"set_vring_base", FrontendReq::SET_VRING_BASE},
    {"set_vring_enable", FrontendReq::SET_VRING_ENABLE}, {"set_vring_kick", FrontendReq::SET_VRING_KICK},
    {"set_vring_err", FrontendReq::SET_VRING_ERR},
};

void bad_index(Ctx& ctx, const BadIndex& b) {
  ctx.handshake();
  auto& fe = ctx.fe();
  if (b.request == FrontendReq::SET_VRING_ENABLE && !fe.acked_protocol)
    skip("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES (no SET_VRING_ENABLE)");
  Message m;
  std::string what;
  switch (b.request) {
    case FrontendReq::SET_VRING_ADDR: {
      vhu::VringAddr a{};
      a.index = 0x80000000u;  // negative as an int: catches signed bounds checks
      m = Message::request_with(req(b.request), a);
      what = "SET_VRING_ADDR index=0x80000000";
      break;
    }
    case FrontendReq::SET_VRING_BASE:
    case FrontendReq::SET_VRING_ENABLE:
      m = Message::request_with(req(b.request), vhu::VringState{0x80000000u, 1});
      what = fmt::format("{} index=0x80000000", vhu::request_name(b.request));
      break;
    default: {
      const unsigned idx = ring_index_past_device(ctx);
      m = Message::request_with(req(b.request), uint64_t{idx});
      m.fds.push_back(make_eventfd());
      what = fmt::format("{} index={}", vhu::request_name(b.request), idx);
      break;
    }
  }
  expect_refused(ctx, std::move(m), what);
  expect_fresh_connection_works(ctx, "after " + what);
}

// ---- order ----

CONFORM_CASE(before_negotiation,
             .id = "robustness.before_negotiation",
             .requirements = {"VU-SET-OWNER", "VU-REPLY-REQUIRED", "VU-RING-INITIAL-STATE", "VU-ERROR-CLOSE"},
             .summary = "ring and memory requests before SET_OWNER and SET_FEATURES: every request with a reply is "
                        "answered (or the connection closed), no crash; a proper session afterwards works") {
  // The normal reply timeout (bounded by the case's deadline): a back-end that
  // is slow to refuse early requests under load is not one that never answers.
  auto& fe = ctx.fe();
  auto get_base = [&](const std::string& when) {
    auto o = fe.try_request(Message::request_with(req(FrontendReq::GET_VRING_BASE), vhu::VringState{0, 0}));
    if (o.kind == Outcome::Closed) return false;
    check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
          "a GET_VRING_BASE reply (a vring state) " + when + ", or the connection closed", o.text);
    return true;
  };
  bool open = get_base("for a ring never set up, before SET_OWNER");
  if (open) {
    GuestQueue q(ctx.ram(), 0, 64, false, 1);
    std::vector<Message> early;
    early.push_back(Message::request_with(req(FrontendReq::SET_VRING_NUM), vhu::VringState{0, 64}));
    early.push_back(Message::request_with(req(FrontendReq::SET_VRING_BASE), vhu::VringState{0, 0}));
    Message t = set_mem_table_message(ctx.ram().regions());
    t.fds = ctx.ram().dup_fds();
    early.push_back(std::move(t));
    early.push_back(Message::request_with(req(FrontendReq::SET_VRING_ADDR), q.addr()));
    Message kick = Message::request_with(req(FrontendReq::SET_VRING_KICK), uint64_t{0});
    kick.fds.push_back(make_eventfd(1));
    early.push_back(std::move(kick));
    for (auto& m : early) {
      if (!fe.try_send(m)) {
        open = false;
        break;
      }
    }
    if (open) open = get_base("for a ring set up before any negotiation");
  }
  if (open) {
    auto o = fe.try_request(Message::empty(req(FrontendReq::GET_FEATURES)));
    check(o.kind == Outcome::Reply || o.kind == Outcome::Closed,
          "GET_FEATURES answered after requests sent before negotiation (or the connection closed)", o.text);
  }
  check(!ctx.backend().crashed(), "the back-end to survive requests before negotiation", ctx.backend().status_text());
  expect_fresh_connection_works(ctx, "after requests before negotiation");
}

// ---- the memory table changes under running rings ----

vhu::UniqueFd memfd(uint64_t size) {
  vhu::UniqueFd fd(memfd_create("conform-hotplug", MFD_CLOEXEC));
  if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fail("a memfd", std::strerror(errno));
  return fd;
}

// QEMU 7.2's start with one SET_MEM_TABLE, the message these cases send
// again, and the tx ring proven to run before they do.
QemuFrontend started_with_mem_table(Ctx& ctx) {
  QemuFrontend q = started(ctx, without_mem_slots());
  tx_consume(ctx, q.guest(), 2, "before the memory table changes");
  return q;
}

CONFORM_CASE(mem_table_while_running,
             .id = "robustness.mem_table_while_running",
             .requirements = {"VU-CONFIG-ON-THE-FLY", "VU-MEM-TABLE", "VU-MEM-ADDR-MAPPING"},
             .summary = "SET_MEM_TABLE adding a region while the rings run (memory hotplug): the rings keep "
                        "working and a buffer in the new region is used",
             .device = "vsock") {
  QemuFrontend q = started_with_mem_table(ctx);
  auto& g = q.guest();
  constexpr uint64_t kSize = 1 << 20, kGpa = 0x200000000ull, kUva = 0x7f6c00000000ull;
  vhu::UniqueFd fd = memfd(kSize);
  void* map = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) fail("a mapping of the new region", std::strerror(errno));
  std::unique_ptr<void, std::function<void(void*)>> unmap(map, [](void* p) { munmap(p, kSize); });
  auto regions = ctx.ram().regions();
  regions.push_back({kGpa, kSize, kUva, 0});
  Message m = set_mem_table_message(regions);
  m.fds = ctx.ram().dup_fds();
  m.fds.push_back(std::move(fd));
  expect_accepted(ctx, std::move(m), "SET_MEM_TABLE with a third region while the rings run");
  tx_consume(ctx, g, 3, "after the memory table changed under the running rings");
  // An RST (no reply may come) whose buffer lives only in the new region.
  auto h = g.hdr(vs::Op::RST, 43000, 49999);
  vs::encode(h, std::span<uint8_t, vs::kHdrSize>(static_cast<uint8_t*>(map), vs::kHdrSize));
  vhu::DriverBuffer b{kGpa, static_cast<uint32_t>(vs::kHdrSize), false};
  auto head = g.tx().dq().add({&b, 1});
  check(head.ok(), "a free tx descriptor", head.ok() ? "" : head.message());
  g.tx().dq().publish();
  g.tx().kick();
  const uint16_t want = g.tx().dq().avail_idx();
  bool ok = g.wait_until([&] { return g.tx().used_idx() == want; }, std::min(ctx.remaining_ms(), 2000));
  check(ok, "the tx buffer in the hot-added region used", fmt::format("tx used idx {}, want {}", g.tx().used_idx(), want));
}

CONFORM_CASE(mem_table_drops_ring_region,
             .id = "robustness.mem_table_drops_ring_region",
             .requirements = {"VU-MEM-TABLE", "VU-MEM-ADDR-MAPPING", "VU-ERROR-CLOSE"},
             .summary = "SET_MEM_TABLE without the region holding the tx ring, while it runs: the back-end stops "
                        "touching that memory (no crash, no used entry, no write) and keeps serving",
             .device = "vsock") {
  QemuFrontend q = started_with_mem_table(ctx);
  auto& g = q.guest();
  // Region 0 holds the tx ring and the tx buffers (vsock_guest.cpp).
  Message m = set_mem_table_message({ctx.ram().region(1)});
  m.fds.push_back(ctx.ram().dup_fd(1));
  auto& fe = ctx.fe();
  if (fe.reply_ack()) m.hdr.flags |= vhu::kFlagNeedReply;
  auto o = fe.try_request(m);
  ctx.note("SET_MEM_TABLE without the tx ring's region: " + o.text);
  if (o.kind != Outcome::Closed) {
    const uint16_t used = g.tx().used_idx();
    g.send(g.hdr(vs::Op::RST, 43001, 49999), {}, false);
    RamSnapshot snap(ctx.ram());
    g.tx().kick();
    std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));
    check(g.tx().used_idx() == used,
          "no tx buffer used from a ring whose memory is no longer in the table",
          fmt::format("tx used idx moved from {} to {}", used, g.tx().used_idx()));
    expect_no_stray_writes(ctx, snap, {{g.rx().dq().used_gpa(), vr::used_ring_bytes(g.rx().size())}},
                           "after the ring's region left the table");
    expect_survived(ctx, "a memory table without the running ring's region");
  }
  expect_fresh_connection_works(ctx, "after the ring's memory was taken away");
}

// ---- rings ----
//
// Each mutation lays a malformed chain (or a malformed avail index) on tx, or
// a buffer the device may not fill on rx, in descriptors the guest driver
// leaves unused (the top of the table). Tx chains carry a valid REQUEST to a
// host port the case listens on, so a back-end that acts on the malformed
// chain is seen doing it. No rx buffers are posted on tx cases, so the only
// legitimate device writes are the used rings: guest RAM is filled with a
// canary pattern and diffed.

constexpr uint32_t kListenPort = 7077;
constexpr uint32_t kGuestPort = 5100;

struct Build {
  Ctx& ctx;
  GuestQueue& q;
  uint64_t buf = 0;  // a 4 KiB scratch buffer; tx: a REQUEST header at its start
  uint16_t head = 0;
  uint16_t d0 = 0, d1 = 0;  // free descriptor indices
  bool jump = false;        // the avail idx moves more than the queue size

  vr::Desc* table() { return q.dq().desc_table(); }
  vr::Desc* scratch_table(uint32_t entries, uint64_t* gpa) {
    *gpa = ctx.ram().alloc(16ull * entries, 16, q.index() == vs::kRxQueue ? 1 : 0);
    return reinterpret_cast<vr::Desc*>(ctx.ram().host(*gpa, 16ull * entries));
  }
};

constexpr uint16_t kNext = vr::kDescFNext, kWrite = vr::kDescFWrite, kIndirect = vr::kDescFIndirect;
constexpr uint32_t kHdr = static_cast<uint32_t>(vs::kHdrSize);

enum class Side { Tx, Rx };
enum class Indirect { Any, Needed, Off };

struct RingMutation {
  const char* name;
  Side side;
  Indirect indirect;
  std::vector<std::string> requirements;
  const char* summary;
  void (*build)(Build&);
};

const RingMutation kRing[] = {
    {"desc_loop", Side::Tx, Indirect::Any, {"VQ-NO-LOOP"},
     "a tx chain whose second descriptor points back at the first",
     [](Build& b) {
       b.table()[b.d0] = {b.buf, kHdr, kNext, b.d1};
       b.table()[b.d1] = {b.buf + 64, 16, kNext, b.d0};
       b.head = b.d0;
     }},
    {"next_out_of_range", Side::Tx, Indirect::Any, {"VQ-QUEUE-CAPACITY"},
     "a tx descriptor whose next is past the end of the descriptor table",
     [](Build& b) {
       b.table()[b.d0] = {b.buf, kHdr, kNext, static_cast<uint16_t>(b.q.size() + 7)};
       b.head = b.d0;
     }},
    {"chain_longer_than_queue", Side::Tx, Indirect::Needed, {"VQ-CHAIN-LEN"},
     "an indirect tx chain of queue size + 1 descriptors",
     [](Build& b) {
       const uint32_t n = b.q.size() + 1;
       uint64_t gpa;
       vr::Desc* t = b.scratch_table(n, &gpa);
       t[0] = {b.buf, kHdr, kNext, 1};
       for (uint32_t i = 1; i < n; ++i)
         t[i] = {b.buf + 64, 1, static_cast<uint16_t>(i + 1 < n ? kNext : 0), static_cast<uint16_t>(i + 1 < n ? i + 1 : 0)};
       b.table()[b.d0] = {gpa, 16 * n, kIndirect, 0};
       b.head = b.d0;
     }},
    {"desc_outside_memory", Side::Tx, Indirect::Any, {"VU-MEM-ADDR-MAPPING"},
     "a tx descriptor that starts 20 bytes before the end of a region and runs 24 bytes past it",
     [](Build& b) {
       const auto r = b.ctx.ram().region(0);
       b.table()[b.d0] = {r.guest_phys_addr + r.memory_size - 20, kHdr, 0, 0};
       b.head = b.d0;
     }},
    {"len_wraps", Side::Tx, Indirect::Any, {"VU-MEM-ADDR-MAPPING", "VQ-NO-LOOP"},
     "a tx chain whose second descriptor's addr + len wraps past 2^64 into guest memory",
     [](Build& b) {
       b.table()[b.d0] = {b.buf, kHdr, kNext, b.d1};
       b.table()[b.d1] = {~0ull - 0xfff, 0x2000, 0, 0};
       b.head = b.d0;
     }},
    {"indirect_not_negotiated", Side::Tx, Indirect::Off, {"VQ-INDIRECT-RULES"},
     "an INDIRECT tx descriptor though VIRTIO_F_RING_INDIRECT_DESC was not negotiated",
     [](Build& b) {
       uint64_t gpa;
       vr::Desc* t = b.scratch_table(1, &gpa);
       t[0] = {b.buf, kHdr, 0, 0};
       b.table()[b.d0] = {gpa, 16, kIndirect, 0};
       b.head = b.d0;
     }},
    {"nested_indirect", Side::Tx, Indirect::Needed, {"VQ-INDIRECT-RULES"},
     "an indirect tx table whose second entry is itself INDIRECT",
     [](Build& b) {
       uint64_t gpa, gpa2;
       vr::Desc* t = b.scratch_table(2, &gpa);
       vr::Desc* t2 = b.scratch_table(1, &gpa2);
       t2[0] = {b.buf + 64, 8, 0, 0};
       t[0] = {b.buf, kHdr, kNext, 1};
       t[1] = {gpa2, 16, kIndirect, 0};
       b.table()[b.d0] = {gpa, 32, kIndirect, 0};
       b.head = b.d0;
     }},
    {"avail_idx_jump", Side::Tx, Indirect::Any, {"VQ-QUEUE-CAPACITY"},
     "the tx avail idx moves queue size + 1 past the device's position (every entry a valid REQUEST)",
     [](Build& b) {
       b.table()[b.d0] = {b.buf, kHdr, 0, 0};
       b.head = b.d0;
       b.jump = true;
     }},
    {"rx_zero_length", Side::Rx, Indirect::Any, {"VQ-DEVICE-WRITES"},
     "a zero-length device-writable rx buffer, then a host CONNECT the device must announce",
     [](Build& b) {
       b.table()[b.d0] = {b.buf + 64, 0, kWrite, 0};
       b.head = b.d0;
     }},
    {"rx_too_small", Side::Rx, Indirect::Any, {"VQ-DEVICE-WRITES"},
     "a 16-byte rx buffer (a packet header needs 44), then a host CONNECT",
     [](Build& b) {
       b.table()[b.d0] = {b.buf + 64, 16, kWrite, 0};
       b.head = b.d0;
     }},
    {"rx_device_readable", Side::Rx, Indirect::Any, {"VQ-DEVICE-WRITES"},
     "a device-readable (not WRITE) buffer on rx, then a host CONNECT",
     [](Build& b) {
       b.table()[b.d0] = {b.buf + 64, 256, 0, 0};
       b.head = b.d0;
     }},
};

// Lays `mu` in the descriptors the guest driver leaves unused on `mu`'s ring
// of `g` and makes it available, without a kick. A tx chain carries a valid
// REQUEST from kGuestPort to kListenPort. Each `slot` takes its own two
// descriptors from the top of the table (the driver hands out the lowest
// free ones), so a chain laid after one the device stepped over without
// returning it does not reuse descriptors the device may still hold.
GuestQueue& lay_malformed(Ctx& ctx, VsockGuest& g, const RingMutation& mu, unsigned slot = 0) {
  GuestQueue& rq = mu.side == Side::Tx ? g.tx() : g.rx();
  Build b{ctx, rq};
  b.buf = ctx.ram().alloc(4096, 64, mu.side == Side::Tx ? 0 : 1);
  b.d0 = static_cast<uint16_t>(rq.size() - 1 - 2 * slot);
  b.d1 = static_cast<uint16_t>(rq.size() - 2 - 2 * slot);
  if (mu.side == Side::Tx) {
    auto h = g.hdr(vs::Op::REQUEST, kGuestPort, kListenPort);
    vs::encode(h, std::span<uint8_t, vs::kHdrSize>(ctx.ram().host(b.buf, kHdr), vs::kHdrSize));
  }
  mu.build(b);
  auto& dq = rq.dq();
  const uint16_t idx = dq.avail_idx();
  if (b.jump) {
    for (uint32_t i = 0; i < rq.size(); ++i) dq.avail_ring()[i] = b.head;
    dq.set_avail_idx_raw(static_cast<uint16_t>(idx + rq.size() + 1));
  } else {
    dq.avail_ring()[idx % rq.size()] = b.head;
    dq.set_avail_idx_raw(static_cast<uint16_t>(idx + 1));
  }
  return rq;
}

const RingMutation& ring_entry(std::string_view name) {
  for (const auto& m : kRing)
    if (name == m.name) return m;
  throw std::logic_error("suite bug: no ring mutation " + std::string(name));
}

void ring_mutation(Ctx& ctx, const RingMutation& mu) {
  fill_canary(ctx.ram());
  QemuOptions o;
  o.post_rx_before_start = false;
  if (mu.indirect == Indirect::Off) o.guest_features &= ~vhu::bit(vhu::feature::RING_INDIRECT_DESC);
  auto listener = ctx.host().listen(kListenPort);
  QemuFrontend q = started(ctx, o);
  if (mu.indirect == Indirect::Needed && !vhu::has_bit(q.acked_features(), vhu::feature::RING_INDIRECT_DESC))
    skip("back-end does not offer VIRTIO_F_RING_INDIRECT_DESC");
  auto& g = q.guest();
  tx_consume(ctx, g, 1, "before the malformed ring input");
  GuestQueue& rq = lay_malformed(ctx, g, mu);
  const auto allowed = vsock_writable(g);
  RamSnapshot snap(ctx.ram());
  rq.take_errs();
  const uint16_t used = rq.used_idx();
  rq.kick();
  vhu::UniqueFd host;
  if (mu.side == Side::Rx) host = ctx.host().connect(4321);
  std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));

  check(!ctx.backend().crashed(), std::string("the back-end to survive ") + mu.summary, ctx.backend().status_text());
  expect_no_stray_writes(ctx, snap, allowed, std::string("after ") + mu.summary);
  if (mu.side == Side::Tx) {
    auto acted = accept_timeout(listener.get(), 0);
    check(!acted.valid(), "the malformed tx chain not acted on",
          fmt::format("the back-end connected to {}_{} for the REQUEST it carried", ctx.host().uds(), kListenPort));
  }
  ctx.note(fmt::format("reaction: err eventfd signalled {}, used idx {} -> {}", times(rq.take_errs()), used,
                       rq.used_idx()));
  expect_survived(ctx, mu.summary);
  expect_fresh_connection_works(ctx, std::string("after ") + mu.summary);
}

void ring_body(Ctx& ctx) { ring_mutation(ctx, ring_entry(tail(ctx))); }

// A back-end may step over a malformed chain or stop the ring at it (the
// ring cases above accept both). Once it stops, every later packet of the
// guest waits forever, so it has to tell someone: QEMU watches the err
// eventfd ("vhost vring error in virtqueue"), a front-end that asks GET_STATUS
// sees DEVICE_NEEDS_RESET. A back-end that steps over a chain is in no error
// state there, but it may stop at a chain of another kind (a walker that
// bounds loops by a step count fails differently from one that checks each
// next index), so the case lays the kinds below one after another, each with
// a valid REQUEST behind it, until one stops the ring.
constexpr std::string_view kStopCandidates[] = {"next_out_of_range", "desc_outside_memory", "len_wraps",
                                                "desc_loop",         "chain_longer_than_queue", "nested_indirect"};

CONFORM_CASE(ring_error_reported,
             .id = "robustness.ring_error_reported",
             .requirements = {"VIRTIO-NEEDS-RESET", "VU-VRING-ERR"},
             .summary = "a tx ring that a malformed chain stopped is reported: its err eventfd signalled or "
                        "DEVICE_NEEDS_RESET in GET_STATUS (malformed chains of several kinds laid in turn until one "
                        "stops the ring)",
             .device = "vsock") {
  constexpr uint32_t kBehindPort = kListenPort + 1;
  auto bad_target = ctx.host().listen(kListenPort);
  auto behind_target = ctx.host().listen(kBehindPort);
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  const bool indirect = vhu::has_bit(q.acked_features(), vhu::feature::RING_INDIRECT_DESC);
  tx_consume(ctx, g, 1, "before the malformed chains");
  std::vector<std::string> stepped_over;
  const RingMutation* stopped_at = nullptr;
  GuestQueue& tq = g.tx();  // every candidate is a tx chain
  unsigned slot = 0;
  for (std::string_view name : kStopCandidates) {
    const RingMutation& mu = ring_entry(name);
    if (mu.indirect == Indirect::Needed && !indirect) continue;
    lay_malformed(ctx, g, mu, slot);
    tq.take_errs();
    // The chain and a valid REQUEST behind it, in one kick. The kick is
    // unconditional, as in ring_mutation: lay_malformed() published the chain
    // without one, so with EVENT_IDX send() would think the device had been
    // told of it already and keep quiet, leaving the chain to whatever next
    // wakes the back-end (a later front-end message, too late for the window).
    g.send(g.hdr(vs::Op::REQUEST, kGuestPort + 1 + slot, kBehindPort), {}, /*kick=*/false);
    tq.kick();
    ++slot;
    if (!accept_timeout(behind_target.get(), ctx.cfg().quiet_window_ms).valid()) {
      stopped_at = &mu;
      break;
    }
    const uint64_t errs = tq.take_errs();
    stepped_over.push_back(errs == 0 ? std::string(mu.name)
                                     : fmt::format("{} (err eventfd signalled {})", mu.name, times(errs)));
  }
  const std::string over =
      stepped_over.empty() ? "" : fmt::format(" after stepping over {}", fmt::join(stepped_over, ", "));
  if (stopped_at == nullptr)
    skip(fmt::format("the back-end went on past every malformed tx chain (the REQUEST behind each reached the "
                     "host): {}; no error state, nothing to report",
                     fmt::join(stepped_over, ", ")));
  if (expect_survived(ctx, std::string("a malformed tx chain: ") + stopped_at->summary)) {
    ctx.note(fmt::format("the back-end closed the connection at {}{}: the front-end sees that", stopped_at->name, over));
    return;
  }
  const uint64_t errs = tq.take_errs();
  std::string status = "not negotiated";
  bool needs_reset = false;
  if (ctx.fe().protocol_negotiated(vhu::protocol_feature::STATUS)) {
    const uint64_t s = ctx.fe().get_status();
    needs_reset = (s & vhu::status::DEVICE_NEEDS_RESET) != 0;
    status = fmt::format("{:#x}", s);
  }
  ctx.note(fmt::format("tx stopped at {}{}; err eventfd signalled {}, GET_STATUS {}", stopped_at->name, over,
                       times(errs), status));
  if (errs > 0 || needs_reset) return;
  // Only a back-end about to fail waits this long: a slow one is not one that stopped.
  const int wait_ms = std::min(ctx.remaining_ms(), 2000);
  if (accept_timeout(behind_target.get(), wait_ms).valid())
    skip(fmt::format("the back-end went on past the malformed tx chain {}, late (the REQUEST behind it reached the "
                     "host after more than {} ms{}): no error state, nothing to report",
                     stopped_at->name, ctx.cfg().quiet_window_ms, over));
  fail("tx stopped by a malformed chain and reported: ring 1's err eventfd signalled, or DEVICE_NEEDS_RESET (0x40) "
       "in GET_STATUS",
       fmt::format("tx stopped at {} ({}){}, and neither came (err eventfd never signalled, GET_STATUS {}); the "
                   "REQUEST behind the chain was not processed in {} ms: the guest's later packets wait with "
                   "nothing to say why",
                   stopped_at->name, stopped_at->summary, over, status, ctx.cfg().quiet_window_ms + wait_ms));
}

CONFORM_CASE(vsock_len_exceeds_buffer,
             .id = "robustness.vsock_len_exceeds_buffer",
             .requirements = {"VSOCK-HDR-LEN", "VQ-DEVICE-WRITES"},
             .summary = "an RW packet whose header len (4000) exceeds the 10 payload bytes of its buffer: nothing "
                        "beyond the buffer reaches the host",
             .device = "vsock",
             .timeout_ms = 8000) {
  auto listener = ctx.host().listen(kListenPort);
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  auto host = open_stream(ctx, g, kGuestPort, kListenPort, listener.get());
  auto* c = g.conn(kGuestPort, kListenPort);
  // The buffer's slot is 4 KiB of 'Z'; the descriptor covers the header and 10 bytes.
  const uint64_t gpa = ctx.ram().alloc(4096, 64, 0);
  uint8_t* p = ctx.ram().host(gpa, 4096);
  std::memset(p, 'Z', 4096);
  auto h = g.hdr(vs::Op::RW, kGuestPort, kListenPort);
  h.len = 4000;
  h.buf_alloc = c->buf_alloc;
  h.fwd_cnt = c->fwd_cnt;
  vs::encode(h, std::span<uint8_t, vs::kHdrSize>(p, vs::kHdrSize));
  std::memcpy(p + kHdr, "0123456789", 10);
  vhu::DriverBuffer buf{gpa, kHdr + 10, false};
  auto head = g.tx().dq().add({&buf, 1});
  check(head.ok(), "a free tx descriptor", head.ok() ? "" : head.message());
  g.tx().dq().publish();
  g.tx().kick();
  bool eof = false;
  std::string got = read_some(host.get(), 300, &eof);
  check(got.find('Z') == std::string::npos && got.size() <= 10,
        "no byte from beyond the 54-byte buffer forwarded to the host",
        fmt::format("the host read {} bytes ({} of them 'Z', guest memory outside the buffer)", got.size(),
                    std::count(got.begin(), got.end(), 'Z')));
  ctx.note(fmt::format("the host read {} bytes{}", got.size(), eof ? " and then EOF" : ""));
  expect_survived(ctx, "an RW packet whose len exceeds its buffer");
  expect_fresh_connection_works(ctx, "after an RW packet whose len exceeds its buffer");
}

// ---- registration of the table-driven message cases ----

template <class T, size_t N>
const T* find_entry(const T (&table)[N], const std::string& name) {
  for (const T& e : table)
    if (name == e.name) return &e;
  return nullptr;
}


void short_body(Ctx& ctx) { short_payload(ctx, *find_entry(kShort, tail(ctx))); }
void long_body(Ctx& ctx) { long_payload(ctx, *find_entry(kLong, tail(ctx))); }
void missing_fd_body(Ctx& ctx) { missing_fd(ctx, *find_entry(kMissingFd, tail(ctx))); }
void bad_index_body(Ctx& ctx) { bad_index(ctx, *find_entry(kBadIndex, tail(ctx))); }

[[maybe_unused]] const bool registered = [] {
  for (const auto& b : kShort)
    register_case({.id = fmt::format("robustness.short_payload.{}", b.name),
                   .requirements = {"VU-MSG-FRAMING", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
                   .summary = fmt::format("{} with a {}-byte payload (shorter than it takes) is refused; framing "
                                          "holds",
                                          vhu::request_name(b.request), b.bytes)},
                  &short_body);
  for (const auto& b : kLong)
    register_case({.id = fmt::format("robustness.long_payload.{}", b.name),
                   .requirements = {"VU-MSG-FRAMING", "VU-ERROR-CLOSE"},
                   .summary = fmt::format("{} with 12 surplus payload bytes shaped like a header: the surplus is "
                                          "skipped, never parsed as a request",
                                          vhu::request_name(b.request))},
                  &long_body);
  for (const auto& b : kMissingFd)
    register_case({.id = fmt::format("robustness.missing_fd.{}", b.name),
                   .requirements = {"VU-VRING-NOFD", "VU-FD-MESSAGES", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
                   .summary = fmt::format("{} with neither an fd nor the invalid-FD flag is refused",
                                          vhu::request_name(b.request))},
                  &missing_fd_body);
  for (const auto& b : kBadIndex)
    register_case({.id = fmt::format("robustness.ring_index.{}", b.name),
                   .requirements = {"VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
                   .summary = fmt::format("{} naming a ring that does not exist is refused; no crash",
                                          vhu::request_name(b.request))},
                  &bad_index_body);
  for (const auto& m : kRing)
    register_case({.id = fmt::format("robustness.ring.{}", m.name),
                   .requirements = [&] {
                     auto r = m.requirements;
                     r.push_back("VU-ERROR-CLOSE");
                     return r;
                   }(),
                   .summary = m.summary,
                   .device = "vsock"},
                  &ring_body);
  return true;
}();

}  // namespace
}  // namespace conform
