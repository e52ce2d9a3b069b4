#include "common.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

namespace conform {

namespace vs = vhu::vsock;

uint32_t req(vhu::FrontendReq r) { return static_cast<uint32_t>(r); }

vhu::DirtyLog make_dirty_log(Ctx& ctx, uint64_t end, uint64_t offset) {
  auto log =
      vhu::DirtyLog::create(vhu::DirtyLog::bytes_for(std::max(end, vhu::gpa_end(ctx.ram().regions()))), offset);
  if (!log) fail("a dirty log in a memfd", log.message());
  return std::move(*log);
}

QemuFrontend started(Ctx& ctx, QemuOptions o) {
  QemuFrontend q(ctx, o);
  q.realize();
  q.start();
  return q;
}

uint64_t qemu_acked_features(Ctx& ctx, const QemuOptions& o) {
  auto& f = ctx.fe();
  uint64_t want = o.guest_features;
  if (f.acked_protocol) want |= vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES);
  return f.offered_features.value_or(0) & want;
}

uint64_t minimal_features(const Frontend& fe) {
  return fe.offered_features.value_or(0) &
         (vhu::bit(vhu::feature::VERSION_1) | vhu::bit(vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES));
}

QemuOptions without_mem_slots() {
  QemuOptions o;
  o.accept_protocol &= ~vhu::bit(vhu::protocol_feature::CONFIGURE_MEM_SLOTS);
  return o;
}

vhu::Message set_mem_table_message(const std::vector<vhu::MemoryRegion>& regions) {
  vhu::MemoryTable t{};
  t.nregions = static_cast<uint32_t>(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) t.regions[i] = regions[i];
  vhu::Message m = vhu::Message::empty(req(vhu::FrontendReq::SET_MEM_TABLE));
  m.set_payload_bytes({reinterpret_cast<const uint8_t*>(&t), 8 + 32 * regions.size()});
  return m;
}

std::string times(uint64_t n) { return n == 0 ? "never" : n == 1 ? "once" : fmt::format("{} times", n); }

void expect_no_anomalies(VsockGuest& g, const std::string& want) {
  check(g.anomalies().empty(), want, g.anomalies().empty() ? "" : g.anomalies().front());
}

std::optional<RxPacket> wait_op(Ctx& ctx, VsockGuest& g, vs::Op o, uint32_t guest_port, int ms) {
  return g.wait_rx(
      [&](const RxPacket& p) { return p.hdr.op == static_cast<uint16_t>(o) && p.hdr.dst_port == guest_port; },
      std::min(ctx.remaining_ms(), ms));
}

bool expect_refused(Ctx& ctx, vhu::Message m, const std::string& what) {
  auto& fe = ctx.fe();
  const bool acks = fe.reply_ack();
  if (acks) m.hdr.flags |= vhu::kFlagNeedReply;
  auto o = fe.try_request(m);
  if (o.kind == Outcome::Closed) {
    ctx.note(fmt::format("the back-end closed the connection on {} (allowed)", what));
    if (ctx.backend().crashed()) fail(what + " refused", "the back-end crashed: " + ctx.backend().status_text());
    return true;
  }
  if (acks) {
    check(o.kind == Outcome::Reply, fmt::format("a REPLY_ACK refusing {}", what), o.text);
    check(o.reply.payload.size() == 8, "a u64 ack", fmt::format("{} payload bytes", o.reply.payload.size()));
    check(o.u64 != 0, fmt::format("a non-zero ack refusing {} (or the connection closed)", what),
          "ack 0: the back-end claims success");
  } else {
    // Without REPLY_ACK a refusal by closing shows only on the next request.
    auto probe = fe.try_request(vhu::Message::empty(req(vhu::FrontendReq::GET_FEATURES)));
    if (probe.kind == Outcome::Closed) {
      ctx.note(fmt::format("the back-end closed the connection on {} (allowed)", what));
      if (ctx.backend().crashed()) fail(what + " refused", "the back-end crashed: " + ctx.backend().status_text());
      return true;
    }
    check(probe.kind == Outcome::Reply && probe.reply.payload.size() == 8,
          "the back-end to keep answering (GET_FEATURES) after " + what, probe.text);
    return false;
  }
  ctx.expect_alive("after " + what);
  return false;
}

void expect_accepted(Ctx& ctx, vhu::Message m, const std::string& what) {
  auto& fe = ctx.fe();
  if (fe.reply_ack()) m.hdr.flags |= vhu::kFlagNeedReply;
  auto o = fe.try_request(m);
  check(o.kind == Outcome::Reply, fmt::format("{} accepted", what), o.text);
  if (m.need_reply()) check(o.u64 == 0, fmt::format("ack 0 for {}", what), o.text);
}

void tx_consume(Ctx& ctx, VsockGuest& g, unsigned n, const std::string& what, bool kick) {
  g.reclaim_tx();
  const uint16_t target = static_cast<uint16_t>(g.tx().dq().avail_idx() + n);
  for (unsigned i = 0; i < n; ++i) {
    auto h = g.hdr(vs::Op::RST, 40000 + i, 49999);
    g.send(h, {}, kick);
  }
  const int ms = std::min(ctx.remaining_ms(), 2000);
  bool ok = g.wait_until([&] { return g.tx().used_idx() == target; }, ms);
  check(ok, fmt::format("the back-end to use {} tx buffer(s) {} (used idx {})", n, what, target),
        fmt::format("used idx {} after {} ms", g.tx().used_idx(), ms));
  g.reclaim_tx();
}

vhu::UniqueFd open_stream(Ctx& ctx, VsockGuest& g, uint32_t guest_port, uint32_t host_port, int listen_fd) {
  auto& c = g.connect(guest_port, host_port);
  const int ms = std::min(ctx.remaining_ms(), 3000);
  auto host = accept_timeout(listen_fd, ms);
  check(host.valid(), fmt::format("the back-end to connect to {}_{} for the guest's REQUEST", ctx.host().uds(), host_port),
        "no connection");
  bool ok = g.wait_until([&] { return c.established || c.reset; }, ms);
  check(ok && c.established, fmt::format("a RESPONSE to the guest's REQUEST {}->{}", guest_port, host_port),
        c.reset ? "RST" : "nothing");
  return host;
}

void exchange(Ctx& ctx, VsockGuest& g, GuestConn& c, int host_fd, const std::string& tag) {
  const std::string up = "guest->host " + tag + ";";
  const std::string down = "host->guest " + tag + ";";
  g.write(c, up);
  std::string got = read_n(host_fd, up.size(), std::min(ctx.remaining_ms(), 2000));
  check(got == up, fmt::format("the host to read \"{}\" exactly once", up), fmt::format("\"{}\"", got));
  const size_t before = c.received.size();
  check(write_all(host_fd, down), "the host socket to accept data", "write failed");
  bool ok = g.wait_until([&] { return c.received.size() >= before + down.size(); }, std::min(ctx.remaining_ms(), 2000));
  std::string in = c.received.substr(before);
  check(ok && in == down, fmt::format("the guest to receive \"{}\" exactly once", down), fmt::format("\"{}\"", in));
}

std::string first_difference(std::string_view want, std::string_view got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  if (i == want.size() && i == got.size()) return "identical";
  if (i == got.size()) return fmt::format("{} of {} bytes arrived", got.size(), want.size());
  return fmt::format("{} bytes arrived; first difference at offset {}", got.size(), i);
}

void add_to_messages(std::vector<std::string>& msgs, const RxPacket& p) {
  msgs.back().append(p.data.begin(), p.data.end());
  if (p.hdr.flags & vhu::vsock::kSeqEom) msgs.emplace_back();
}

void expect_within_linux_packet_limit(Ctx& ctx, VsockGuest& g, GuestConn& c, std::string_view all, size_t size,
                                      const int& sent, const std::function<std::vector<RxPacket>()>& flow) {
  const bool stream = c.type == vhu::vsock::kTypeStream;
  const size_t messages = all.size() / size;
  const uint32_t limit = linux_rx_packet_limit(c.buf_alloc);
  int held = 0;
  std::vector<std::string> msgs(1);
  auto take = [&] {
    bool rw = false;
    for (const auto& p : flow()) {
      if (p.hdr.op != static_cast<uint16_t>(vhu::vsock::Op::RW)) continue;
      rw = true;
      if (!c.reading) ++held;
      add_to_messages(msgs, p);
    }
    return rw;
  };
  // Until the device stops sending to a guest that reads nothing, or has sent
  // more than Linux holds.
  auto last_rw = Clock::now();
  const auto quiet = std::chrono::milliseconds(2 * ctx.cfg().quiet_window_ms);
  while (held <= static_cast<int>(limit) && !c.reset && ctx.remaining_ms() > 3000 &&
         (held == 0 || Clock::now() - last_rw < quiet)) {
    if (take()) last_rw = Clock::now();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  check(held > 0, fmt::format("RW packets for CID {} port {} before it reads", g.cid(), c.local_port), "none");
  check(held <= static_cast<int>(limit),
        fmt::format("at most {} RW packets held by a guest that has read nothing (buf_alloc {} / SKB_TRUESIZE(0) "
                    "{}); Linux 6.12.92 and later{} reset the connection at the next (ENOBUFS)",
                    limit, c.buf_alloc, kLinuxSkbTruesize,
                    stream ? ", until they learnt to merge queued stream packets," : ""),
        fmt::format("{} RW packets, {} bytes, all within the byte credit", held, c.unread()));
  check(!c.reset, "the connection to stay open while the guest holds its packets", "RST");
  ctx.note(fmt::format("{} RW packets held by CID {} before it read (Linux's limit: {})", held, g.cid(), limit));

  // The guest reads, and tells the sender as its queue drains, as Linux does.
  g.read_queued(c);
  uint32_t told = c.fwd_cnt;
  const auto end = Clock::now() + std::chrono::milliseconds(std::min(ctx.remaining_ms() - 500, 4000));
  auto done = [&] { return stream ? msgs.front().size() >= all.size() : msgs.size() > messages; };
  while (!done() && !c.reset && Clock::now() < end) {
    take();
    if (c.fwd_cnt != told) {
      g.credit_update(c);
      told = c.fwd_cnt;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (stream) {
    check(!c.reset && msgs.size() == 1 && msgs.front() == all,
          fmt::format("all {} bytes in order, no EOM on a stream, once the guest reads", all.size()),
          c.reset ? "RST"
          : msgs.size() > 1
              ? fmt::format("EOM on a stream RW packet after {} bytes", msgs.front().size())
              : first_difference(all, msgs.front()));
    return;
  }
  size_t intact = 0;
  while (intact + 1 < msgs.size() && msgs[intact] == all.substr(intact * size, size)) ++intact;
  check(!c.reset && intact == messages && msgs.back().empty(),
        fmt::format("all {} messages of {} bytes, each ended by EOM, once the guest reads", messages, size),
        fmt::format("{}{} intact message(s) of {} with EOM (sender sent {}), {} bytes after the last EOM",
                    c.reset ? "RST; " : "", intact, msgs.size() - 1, sent, msgs.back().size()));
}

}  // namespace conform
