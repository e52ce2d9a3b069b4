#include "robustness_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace conform {

namespace {
constexpr uint8_t kCanary = 0xcc;
}

void fill_canary(GuestRam& ram) {
  for (size_t i = 0; i < ram.num_regions(); ++i) {
    const auto r = ram.region(i);
    std::memset(ram.host(r.guest_phys_addr, r.memory_size), kCanary, r.memory_size);
  }
}

RamSnapshot::RamSnapshot(const GuestRam& ram) {
  for (size_t i = 0; i < ram.num_regions(); ++i) {
    const auto r = ram.region(i);
    const uint8_t* p = ram.host(r.guest_phys_addr, r.memory_size);
    copy_.emplace_back(p, p + r.memory_size);
  }
}

std::vector<std::string> RamSnapshot::stray_writes(const GuestRam& ram, const std::vector<GuestRange>& allowed) const {
  auto is_allowed = [&](uint64_t gpa) {
    for (const auto& a : allowed)
      if (gpa >= a.gpa && gpa - a.gpa < a.len) return true;
    return false;
  };
  std::vector<std::string> out;
  for (size_t i = 0; i < copy_.size() && out.size() < 4; ++i) {
    const auto r = ram.region(i);
    const uint8_t* now = ram.host(r.guest_phys_addr, r.memory_size);
    const uint8_t* was = copy_[i].data();
    uint64_t off = 0;
    while (off < r.memory_size && out.size() < 4) {
      // Word compare first: 4 MiB of mostly unchanged memory.
      if (off + 8 <= r.memory_size && std::memcmp(now + off, was + off, 8) == 0) {
        off += 8;
        continue;
      }
      if (now[off] == was[off] || is_allowed(r.guest_phys_addr + off)) {
        ++off;
        continue;
      }
      const uint64_t start = off;
      while (off < r.memory_size && now[off] != was[off] && !is_allowed(r.guest_phys_addr + off)) ++off;
      out.push_back(fmt::format("gpa {:#x}..{:#x} ({} bytes, was {:#04x} now {:#04x})", r.guest_phys_addr + start,
                                r.guest_phys_addr + off, off - start, was[start], now[start]));
    }
  }
  return out;
}

std::vector<GuestRange> vsock_writable(VsockGuest& g) {
  std::vector<GuestRange> out;
  for (GuestQueue* q : {&g.rx(), &g.tx()})
    out.push_back({q->dq().used_gpa(), vhu::vring::used_ring_bytes(q->size())});
  const vhu::vring::Desc* d = g.rx().dq().desc_table();
  for (uint32_t i = 0; i < g.rx().size(); ++i)
    if ((d[i].flags & vhu::vring::kDescFWrite) && d[i].len > 0) out.push_back({d[i].addr, d[i].len});
  return out;
}

void expect_no_stray_writes(Ctx& ctx, const RamSnapshot& snap, const std::vector<GuestRange>& allowed,
                            const std::string& after) {
  auto bad = snap.stray_writes(ctx.ram(), allowed);
  if (bad.empty()) return;
  std::string got;
  for (const auto& b : bad) got += (got.empty() ? "" : "; ") + b;
  fail("no guest-memory write outside the used rings and the device-writable buffers " + after, got);
}

bool expect_survived(Ctx& ctx, const std::string& what) {
  check(!ctx.backend().crashed(), "the back-end to survive " + what, ctx.backend().status_text());
  auto& fe = ctx.fe();
  if (!fe.connected()) return true;
  auto o = fe.try_request(vhu::Message::empty(req(vhu::FrontendReq::GET_FEATURES)));
  if (o.kind == Outcome::Closed) {
    check(!ctx.backend().crashed(), "the back-end to survive " + what, ctx.backend().status_text());
    ctx.note("the back-end closed the connection after " + what);
    return true;
  }
  check(o.kind == Outcome::Reply && o.reply.payload.size() == 8,
        "the back-end to keep answering (GET_FEATURES) or close the connection after " + what,
        o.text + "; back-end " + ctx.backend().status_text());
  return false;
}

uint8_t ring_index_past_device(Ctx& ctx) {
  auto& fe = ctx.fe();
  if (!fe.protocol_negotiated(vhu::protocol_feature::MQ)) return 255;
  const uint64_t n = fe.get_queue_num();
  // DPDK and QEMU's vhost-net read the count as queue pairs, libvhost-user and
  // rust-vmm as queues: twice it is past the last ring under either reading.
  if (n >= 128)
    skip(fmt::format("GET_QUEUE_NUM says {} queues: with two rings each no ring index below 256 is out of range, "
                     "and the u64 form of SET_VRING_KICK/CALL/ERR carries the index in 8 bits",
                     n));
  return static_cast<uint8_t>(2 * n);
}

Frontend& fresh_connection_or_skip(Ctx& ctx, const std::string& after) {
  std::string why;
  Frontend* f = ctx.reconnect(&why);
  // A crash is a failure whether or not the back-end would have taken another
  // front-end; a sanitizer report on stderr fails the case in the runner.
  check(!ctx.backend().crashed(), "the back-end to survive " + after, ctx.backend().status_text());
  // VU-RECONNECT is a MAY: a back-end that serves one front-end and exits
  // (virtiofsd) cannot be checked further, which is not a failure.
  if (!f) skip("back-end does not accept a new connection " + after + " (reconnection is optional): " + why);
  return *f;
}

void expect_fresh_connection_works(Ctx& ctx, const std::string& after) {
  fresh_connection_or_skip(ctx, after);
  if (ctx.cfg().target.device != "vsock") {
    ctx.handshake();
    return;
  }
  QemuFrontend q(ctx);
  q.realize();
  q.guest_reset();
  q.start();
  tx_consume(ctx, q.guest(), 2, "on a fresh connection " + after);
}

}  // namespace conform
