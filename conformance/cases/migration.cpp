// Live migration by dirty-page logging (vhost-user "Migration"): the log a
// front-end shares with SET_LOG_BASE, and what a back-end must mark in it
// once VHOST_F_LOG_ALL is negotiated.
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <set>
#include <string_view>
#include <utility>

#include "common.h"
#include "vhu/dirty_log.h"

namespace conform {
namespace {

using vhu::DirtyLog;
namespace pf = vhu::protocol_feature;

constexpr uint32_t kLogGuestPort = 4700, kLogHostPort = 5700;
// log_guest_addr placed past guest memory starts on a boundary of this.
constexpr uint64_t kLogShiftAlign = 1 << 20;
// Where the switched-to log starts in its file: page-aligned, since
// libvhost-user hands the offset to mmap as it is.
constexpr uint64_t kLogSwitchOffset = 4096;

CONFORM_CASE(set_log_base_answered,
             .id = "migration.set_log_base_answered",
             .requirements = {"VU-LOG-BASE-REPLY"},
             .summary = "with LOG_SHMFD negotiated, SET_LOG_BASE (the log's fd attached, need_reply clear) gets a "
                        "reply carrying its request id; QEMU waits for it at the start of every migration",
             .protocol_features = {pf::LOG_SHMFD}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  fe.set_features(minimal_features(fe));
  fe.set_mem_table(ctx.ram().regions(), ctx.ram().dup_fds());
  const DirtyLog log = make_dirty_log(ctx);
  fe.set_log_base(log);
  ctx.expect_alive("after SET_LOG_BASE");
}

// What the device wrote that the log must show: each byte range, and what it was.
struct Written {
  uint64_t gpa;
  uint64_t len;
  std::string what;
};

// The used-ring entries [from, to) of `q` and its idx, logged at `log_gpa`
// (VHOST_VRING_F_LOG's log_guest_addr) plus their offset in the ring.
void used_writes(std::vector<Written>& out, GuestQueue& q, const char* name, uint64_t log_gpa, uint16_t from,
                 uint16_t to) {
  if (from == to) return;
  out.push_back({log_gpa + vhu::vring::kRingIdx, 2, fmt::format("{} used idx", name)});
  for (uint16_t i = from; i != to; ++i)
    out.push_back({log_gpa + vhu::vring::kRingEntries + 8ull * (i % q.size()), 8,
                   fmt::format("{} used entry {}", name, i)});
}

// The first used_len bytes of each rx buffer, in its descriptors' order.
void buffer_writes(std::vector<Written>& out, const std::vector<RxPacket>& rx) {
  for (size_t k = 0; k < rx.size(); ++k) {
    uint64_t left = rx[k].used_len;
    for (const vhu::DriverBuffer& d : rx[k].descs) {
      if (!d.writable || left == 0) continue;
      const uint64_t n = std::min<uint64_t>(left, d.len);
      out.push_back({d.gpa, n, fmt::format("rx buffer of packet {} (used len {})", k, rx[k].used_len)});
      left -= n;
    }
  }
}

// QEMU's log_guest_addr: the used ring's guest-physical address.
uint64_t used_ring_gpa(GuestQueue& r) { return r.dq().used_gpa(); }

// A stream moved both ways while the device logs, logging started as QEMU
// starts it on a running device, and what the device wrote meanwhile.
struct LoggedRun {
  DirtyLog log;                  // the log in use while the data moved
  DirtyLog first;                // the one it replaced, if the case switched logs
  std::vector<Written> buffers;  // the rx buffers' written bytes, by gpa
  std::vector<Written> used;     // rx and tx used entries and idx, at log_guest_addr
  std::string what;              // how much was moved, for the report
};

// `log_addr(ring)`: the log_guest_addr the ring's SET_VRING_ADDR carries;
// the log covers guest memory and `log_end`. `then` runs once logging has
// started, before any data moves.
LoggedRun logged_exchange(Ctx& ctx, const std::function<uint64_t(GuestQueue&)>& log_addr, uint64_t log_end,
                          const std::function<void(LoggedRun&)>& then = {}) {
  vhu::UniqueFd listener = ctx.host().listen(kLogHostPort);
  QemuFrontend q = started(ctx);
  auto& g = q.guest();
  vhu::UniqueFd host = open_stream(ctx, g, kLogGuestPort, kLogHostPort, listener.get());
  LoggedRun run{make_dirty_log(ctx, log_end), {}, {}, {}, {}};
  q.start_logging(run.log, log_addr);  // QEMU 10's order on a running device
  if (then) then(run);
  // Only what the device writes from here on is judged.
  run.log.clear();
  if (run.first.valid()) run.first.clear();
  const uint16_t rx0 = g.rx().used_idx(), tx0 = g.tx().used_idx();
  std::vector<RxPacket> rx;
  g.record_rx(&rx);
  // Until the exchange ends, however it ends: `rx` dies with it, the guest outlives it.
  struct StopRecording {
    VsockGuest& g;
    ~StopRecording() { g.record_rx(nullptr); }
  } stop_recording{g};

  // Host to guest over several rx buffers, guest to host over several tx ones.
  GuestConn* conn = g.conn(kLogGuestPort, kLogHostPort);
  check(conn != nullptr, "the stream open on the guest's side", "no connection");
  GuestConn& c = *conn;
  const std::string down(3 * VsockGuest::kBufSize, 'd'), up(2 * VsockGuest::kBufSize, 'u');
  const size_t had = c.received.size();
  check(write_all(host.get(), down), "the host program's write to reach the back-end", "write failed");
  g.write(c, up);
  const int ms = std::min(ctx.remaining_ms(), 3000);
  check(g.wait_until([&] { return c.received.size() >= had + down.size(); }, ms),
        fmt::format("{} bytes from the host on rx", down.size()),
        fmt::format("{} after {} ms", c.received.size() - had, ms));
  check(read_n(host.get(), up.size(), ms).size() == up.size(), fmt::format("{} bytes at the host", up.size()),
        "fewer");
  // QEMU reads the log for the last time after the stop (ENABLE 0,
  // GET_VRING_BASE): a back-end may mark a page after the entry is out.
  q.stop();

  check(!rx.empty() && g.tx().used_idx() != tx0, "the device to write rx buffers and tx used entries while logging",
        "nothing to judge");
  buffer_writes(run.buffers, rx);
  used_writes(run.used, g.rx(), "rx", log_addr(g.rx()), rx0, g.rx().used_idx());
  used_writes(run.used, g.tx(), "tx", log_addr(g.tx()), tx0, g.tx().used_idx());
  run.what = fmt::format("{} rx packets, rx used entries {}-{}, tx used entries {}-{}", rx.size(), rx0,
                         g.rx().used_idx(), tx0, g.tx().used_idx());
  return run;
}

// Every page `writes` touch must be marked in the log.
void check_marked(Ctx& ctx, const LoggedRun& run, const std::vector<Written>& writes, std::string_view what) {
  std::set<uint64_t> pages, missing;
  std::string first_missing;
  for (const Written& w : writes) {
    for (uint64_t p = w.gpa / DirtyLog::kPageSize; p <= (w.gpa + w.len - 1) / DirtyLog::kPageSize; ++p) {
      pages.insert(p);
      if (run.log.marked(p * DirtyLog::kPageSize) || !missing.insert(p).second || !first_missing.empty()) continue;
      first_missing = fmt::format("page {:#x} ({}: {:#x}-{:#x})", p * DirtyLog::kPageSize, w.what, w.gpa,
                                  w.gpa + w.len - 1);
    }
  }
  ctx.note(fmt::format("{}: {} pages written, {} marked", run.what, pages.size(), pages.size() - missing.size()));
  std::string elsewhere;
  if (run.first.valid()) {
    const auto n = std::count_if(missing.begin(), missing.end(),
                                 [&](uint64_t p) { return run.first.marked(p * DirtyLog::kPageSize); });
    if (n > 0)
      elsewhere = fmt::format(" ({} of them marked in the log it replaced, which the front-end no longer reads)", n);
  }
  check(missing.empty(), fmt::format("every page of {} marked in the log", what),
        fmt::format("{} of {} pages unmarked{}, first {}; a migration would carry those pages stale", missing.size(),
                    pages.size(), elsewhere, first_missing));
}

CONFORM_CASE(dirty_log_marks_writes,
             .id = "migration.dirty_log_marks_writes",
             .requirements = {"VU-LOG-BASE-REPLY", "VU-LOG-BUFFERS", "VU-LOG-USED-RING"},
             .summary = "once logging starts as QEMU starts it (SET_LOG_BASE, SET_FEATURES with VHOST_F_LOG_ALL, "
                        "SET_VRING_ADDR with VHOST_VRING_F_LOG), every page the device writes is marked: the rx "
                        "buffers it fills, by guest-physical address, and the used entries of rx and tx, at "
                        "log_guest_addr; read after the stop, as QEMU reads it",
             .device = "vsock",
             .protocol_features = {pf::LOG_SHMFD},
             .features = {vhu::feature::LOG_ALL}) {
  const LoggedRun run = logged_exchange(ctx, used_ring_gpa, 0);
  std::vector<Written> all = run.buffers;
  all.insert(all.end(), run.used.begin(), run.used.end());
  check_marked(ctx, run, all, "what the device wrote while logging");
}

CONFORM_CASE(dirty_log_used_ring_at_log_guest_addr,
             .id = "migration.dirty_log_used_ring_at_log_guest_addr",
             .requirements = {"VU-LOG-BASE-REPLY", "VU-LOG-USED-RING"},
             .summary = "used-ring writes are logged at log_guest_addr, not at the ring's own address: with "
                        "log_guest_addr outside the memory table (the text allows it), the used entries of rx and "
                        "tx are marked there",
             .device = "vsock",
             .protocol_features = {pf::LOG_SHMFD},
             .features = {vhu::feature::LOG_ALL}) {
  // Past every region, keeping each ring's offset in its page, so that no
  // translation of the ring's address can land on it.
  const uint64_t end = vhu::gpa_end(ctx.ram().regions());
  const uint64_t shift = (end + kLogShiftAlign - 1) / kLogShiftAlign * kLogShiftAlign;
  ctx.note(fmt::format("log_guest_addr = the used ring's guest-physical address + {:#x}", shift));
  const LoggedRun run = logged_exchange(
      ctx, [shift](GuestQueue& r) { return r.dq().used_gpa() + shift; }, shift + end);
  check_marked(ctx, run, run.used, "the used entries and idx at log_guest_addr");
}

CONFORM_CASE(log_base_switch,
             .id = "migration.log_base_switch",
             .requirements = {"VU-LOG-BASE-REPLY", "VU-LOG-BASE-SWITCH", "VU-LOG-OFFSET"},
             .summary = "a second SET_LOG_BASE while logging (QEMU's log resize: a bigger log, no ring address "
                        "after it) takes over: what the device writes next is marked in the new log, at the "
                        "mmap_offset it gives",
             .device = "vsock",
             .protocol_features = {pf::LOG_SHMFD},
             .features = {vhu::feature::LOG_ALL}) {
  const LoggedRun run = logged_exchange(
      ctx, used_ring_gpa, 0, [&](LoggedRun& r) {
        // Twice the size, as a resize for more memory; one page into its
        // file, which QEMU never does and the text allows.
        DirtyLog bigger = make_dirty_log(ctx, 2 * vhu::gpa_end(ctx.ram().regions()), kLogSwitchOffset);
        ctx.fe().set_log_base(bigger);
        r.first = std::exchange(r.log, std::move(bigger));
        ctx.note(fmt::format("the log switched: {:#x} bytes at offset {:#x} of a new fd", r.log.size(),
                             r.log.offset()));
      });
  std::vector<Written> all = run.buffers;
  all.insert(all.end(), run.used.begin(), run.used.end());
  check_marked(ctx, run, all, "what the device wrote after the switch");
}

}  // namespace
}  // namespace conform
