// Back-end state transfer (vhost-user "Migrating back-end state",
// SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE; seed 001): the reply's bits, the
// channel that behaves like a pipe, CHECK's verdict on good and bad state, and
// a save on one back-end loaded into a fresh one that then carries traffic, in
// QEMU 10's order (shared/traces/qemu-10.0-vhost-user-fs-migrate-restore.txt)
// and in another a front-end may use.
#include <fmt/format.h>

#include <array>
#include <memory>
#include <random>

#include "common.h"
#include "state_transfer.h"

namespace conform {
namespace {

namespace pf = vhu::protocol_feature;
namespace vs = vhu::vsock;

constexpr uint32_t kHostPort = 1400;
constexpr uint32_t kGuestPort = 4400;

uint64_t bit(unsigned b) { return uint64_t{1} << b; }

// QEMU 10 accepts protocol features 0-19, DEVICE_STATE among them.
QemuOptions qemu10(bool mem_slots = true) {
  QemuOptions o;
  o.accept_protocol = bit(20) - 1;
  if (!mem_slots) o.accept_protocol &= ~bit(pf::CONFIGURE_MEM_SLOTS);
  return o;
}

// QEMU 10's migration source: boot, guest traffic, QEMU's stop, save.
struct Source {
  std::vector<uint8_t> blob;
  std::array<uint32_t, 2> bases{};
};

Source run_source(Ctx& ctx, QemuOptions o = qemu10()) {
  QemuFrontend q = started(ctx, o);
  tx_consume(ctx, q.guest(), 3, "on the source");
  // QEMU migrates a vhost-user device only with LOG_ALL and LOG_SHMFD, and
  // starts logging before it stops the rings (fs migrate-restore trace #28-#32).
  std::optional<vhu::DirtyLog> log;
  if (q.can_log()) {
    log = make_dirty_log(ctx);
    q.start_logging(*log);
  } else {
    ctx.note("no dirty logging on the source: QEMU would refuse to migrate a back-end without VHOST_F_LOG_ALL and "
             "LOG_SHMFD");
  }
  Source s;
  s.bases = q.stop();
  s.blob = save_device_state(ctx);
  return s;
}

// The destination: a second process in --spawn mode, otherwise the next
// session of the same back-end (a new connection after the source's closed).
struct Destination {
  explicit Destination(Ctx& ctx) : host(ctx.host()) {}
  HostSide host;
  std::unique_ptr<Backend> be;
  std::unique_ptr<Frontend> source_fe;  // the source's connection, kept open as QEMU keeps it
};

std::unique_ptr<Destination> open_destination(Ctx& ctx) {
  auto d = std::make_unique<Destination>(ctx);
  if (!ctx.backend().spawned()) {
    std::string why;
    if (!ctx.reconnect(&why))
      skip("the destination needs a second back-end (--spawn) or a second connection, which this back-end does "
           "not accept: " + why);
    ctx.note("destination = a new connection to the same back-end (not spawned by the runner)");
    return d;
  }
  auto b = Backend::launch(ctx.cfg().target, ctx.cid(), ctx.cfg().listen_fd);
  if (!b) fail("a second back-end for the destination to start", b.message());
  auto s = (*b)->connect(std::min(ctx.remaining_ms(), ctx.cfg().target.start_timeout_ms));
  if (!s) fail("the destination back-end to accept a connection", s.message());
  d->host = HostSide((*b)->placeholders().uds);
  d->be = std::move(*b);
  ctx.log().record_text(Dir::ToBackend, "(destination: a second back-end process, " + d->be->command_line() + ")");
  d->source_fe = ctx.swap_fe(std::make_unique<Frontend>(std::move(*s), ctx.log(), ctx.deadline()));
  return d;
}

// QEMU 10 on the destination, realized, to start from the source's ring
// bases: the load comes next.
QemuFrontend realize_destination(Ctx& ctx, const Source& s, QemuOptions o = qemu10()) {
  QemuFrontend q(ctx, o);
  q.bases = s.bases;
  q.realize();
  return q;
}

// After the switch-over the driver has had TRANSPORT_RESET (from QEMU, which
// keeps the event queue): its old connections are gone. The destination must
// carry new traffic both ways.
void destination_traffic(Ctx& ctx, Destination& d, QemuFrontend& q) {
  auto& g = q.guest();
  g.conns().clear();
  tx_consume(ctx, g, 2, "on the destination after the load");
  auto listener = d.host.listen(kHostPort);
  auto host = open_stream(ctx, g, kGuestPort, kHostPort, listener.get());
  exchange(ctx, g, *g.conn(kGuestPort, kHostPort), host.get(), "on the destination");
  if (d.be) {
    check(d.be->alive(), "the destination back-end to keep running", d.be->status_text());
    // The runner watches only the first back-end's stderr.
    const std::string err = d.be->stderr_text();
    for (const char* s : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"})
      if (const size_t at = err.find(s); at != std::string::npos)
        fail("no sanitizer report from the destination back-end", err.substr(at, 300));
  }
}

// ---- reply bits and refusals ----

CONFORM_CASE(save_case,
             .id = "device_state.save",
             .requirements = {"VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-ERROR-NO-FD", "VU-DEVICE-STATE-CHANNEL",
                              "VU-CHECK-DEVICE-STATE", "QEMU10-DEVICE-STATE-ORDER"},
             .summary = "QEMU 10's source: stop, SET_DEVICE_STATE_FD(save) with a pipe: reply bits, the state up to "
                        "EOF, CHECK 0",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  Source s = run_source(ctx);
  ctx.note(fmt::format("saved state: {} bytes", s.blob.size()));
}

CONFORM_CASE(load_saved_case,
             .id = "device_state.load_saved",
             .requirements = {"VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-CHANNEL", "VU-CHECK-DEVICE-STATE"},
             .summary = "the state a save produced, loaded on a fresh session before any set-up: CHECK 0",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  Source s = run_source(ctx);
  auto d = open_destination(ctx);
  realize_destination(ctx, s);
  load_device_state(ctx, s.blob);
}

CONFORM_CASE(load_rejects_corrupt,
             .id = "device_state.load_rejects_corrupt",
             .requirements = {"VU-DEVICE-STATE-INTEGRITY", "VU-CHECK-DEVICE-STATE", "VU-DEVICE-STATE-CHANNEL"},
             .summary = "empty, truncated, bit-flipped, oversized and random state: CHECK non-zero each time; the "
                        "real state afterwards: CHECK 0",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 15000) {
  Source s = run_source(ctx);
  if (s.blob.empty())
    skip("the back-end saves an empty state (it keeps no device state), so there is nothing whose integrity a "
         "load could check (VU-DEVICE-STATE-INTEGRITY is a SHOULD)");
  auto d = open_destination(ctx);
  realize_destination(ctx, s);
  const auto& good = s.blob;
  std::mt19937 rng(0x5eed);
  std::vector<uint8_t> random(4096);
  for (auto& b : random) b = static_cast<uint8_t>(rng());
  std::vector<uint8_t> flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  std::vector<uint8_t> oversized = good;
  oversized.resize(good.size() + (1u << 20), 0xa5);
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> bad = {
      {"an empty state", {}},
      {fmt::format("the first {} of its {} bytes", good.size() / 2, good.size()),
       std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(good.size() / 2))},
      {fmt::format("bit 4 of byte {} flipped", good.size() / 2), flipped},
      {"the state followed by 1 MiB more", oversized},
      {"4096 random bytes", random},
  };
  std::string accepted;
  for (const auto& [what, blob] : bad) {
    const uint64_t c = load_device_state_check(ctx, blob);
    if (c == 0) accepted += (accepted.empty() ? "" : ", ") + what;
  }
  check(accepted.empty(), "CHECK_DEVICE_STATE non-zero after loading a state that is not one the back-end saved",
        "0 (success) for " + accepted);
  const uint64_t c = load_device_state_check(ctx, good);
  check(c == 0, "CHECK_DEVICE_STATE 0 for the real state after the refused ones", fmt::format("{:#x}", c));
}

CONFORM_CASE(check_without_transfer,
             .id = "device_state.check_without_transfer",
             .requirements = {"VU-CHECK-DEVICE-STATE", "VU-REPLY-REQUIRED"},
             .summary = "CHECK_DEVICE_STATE with no transfer, REPLY_ACK not negotiated: answered (INTEROP bug 6), "
                        "and not with success",
             .protocol_features = {pf::DEVICE_STATE}) {
  ctx.handshake(~bit(pf::REPLY_ACK));
  const uint64_t c = check_device_state(ctx);
  check(c != 0, "a non-zero CHECK_DEVICE_STATE: no state was transferred, so none was processed", "0 (success)");
}

CONFORM_CASE(unknown_direction,
             .id = "device_state.unknown_direction",
             .requirements = {"VU-DEVICE-STATE-PARAMS", "VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-ERROR-NO-FD"},
             .summary = "SET_DEVICE_STATE_FD with direction 2 (neither save nor load): an error, bit 8, no fd",
             .protocol_features = {pf::DEVICE_STATE}) {
  ctx.handshake();
  Pipe p = make_pipe();
  expect_state_fd_refused(ctx, 2, vhu::kPhaseStopped, std::move(p.wr), "direction 2");
}

CONFORM_CASE(unknown_phase,
             .id = "device_state.unknown_phase",
             .requirements = {"VU-DEVICE-STATE-PARAMS", "VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-ERROR-NO-FD"},
             .summary = "SET_DEVICE_STATE_FD(save) with phase 1 (only 0, stopped, exists): an error, bit 8, no fd",
             .protocol_features = {pf::DEVICE_STATE}) {
  ctx.handshake();
  Pipe p = make_pipe();
  expect_state_fd_refused(ctx, vhu::kTransferSave, 1, std::move(p.wr), "phase 1");
}

CONFORM_CASE(missing_fd,
             .id = "device_state.missing_fd",
             .requirements = {"VU-DEVICE-STATE-CHANNEL", "VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-ERROR-NO-FD",
                              "VU-ERROR-CLOSE"},
             .summary = "SET_DEVICE_STATE_FD(load) without the front-end's fd: an error (or the connection closed)",
             .protocol_features = {pf::DEVICE_STATE}) {
  ctx.handshake();
  expect_state_fd_refused(ctx, vhu::kTransferLoad, vhu::kPhaseStopped, vhu::UniqueFd{}, "a missing fd");
}

CONFORM_CASE(not_negotiated,
             .id = "device_state.not_negotiated",
             .requirements = {"VU-DEVICE-STATE-NEGOTIATED", "VU-DEVICE-STATE-REPLY", "VU-ERROR-CLOSE"},
             .summary = "DEVICE_STATE offered but not acked: SET_DEVICE_STATE_FD(save) is an error (or closes)",
             .protocol_features = {pf::DEVICE_STATE}) {
  ctx.handshake(~bit(pf::DEVICE_STATE));
  Pipe p = make_pipe();
  expect_state_fd_refused(ctx, vhu::kTransferSave, vhu::kPhaseStopped, std::move(p.wr),
                          "SET_DEVICE_STATE_FD without DEVICE_STATE negotiated");
}

// Phase 0 says the device is suspended; here its rings run. Refusing is the
// expected answer; a back-end that saves anyway must still reply in shape
// and keep its rings running.
CONFORM_CASE(while_running,
             .id = "device_state.while_running",
             .requirements = {"VU-DEVICE-STATE-PHASE-SUSPENDED", "VU-DEVICE-STATE-REPLY", "VU-DEVICE-STATE-ERROR-NO-FD"},
             .summary = "SET_DEVICE_STATE_FD(save, stopped) while the rings run: a well-formed reply, and the rings "
                        "keep working",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 10000) {
  QemuFrontend q = started(ctx, qemu10());
  tx_consume(ctx, q.guest(), 2, "before SET_DEVICE_STATE_FD");
  Pipe p = make_pipe();
  auto r = set_state_fd(ctx, vhu::kTransferSave, vhu::kPhaseStopped, std::move(p.wr));
  if (!r.error()) {
    ctx.note("the back-end accepted a save in phase 'stopped' while its rings run");
    vhu::UniqueFd in = r.fd ? std::move(r.fd) : std::move(p.rd);
    read_state_to_eof(ctx, in.get());
    check_device_state(ctx);
  }
  tx_consume(ctx, q.guest(), 2, "after SET_DEVICE_STATE_FD while running");
}

// ---- a migration: save on A, load on a fresh B, B carries traffic ----

CONFORM_CASE(migrate_qemu10,
             .id = "device_state.migrate_qemu10",
             .requirements = {"VU-DEVICE-STATE-RESUME", "QEMU10-DEVICE-STATE-ORDER", "VU-CHECK-DEVICE-STATE",
                              "VU-DEVICE-STATE-CHANNEL", "VU-SET-VRING-BASE"},
             .summary = "save on A; on a fresh B the load comes before SET_FEATURES and any set-up, CHECK right after "
                        "the close; B then starts at A's bases and carries traffic",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 15000) {
  Source s = run_source(ctx);
  auto d = open_destination(ctx);
  QemuFrontend q = realize_destination(ctx, s);
  const uint64_t c = load_device_state_check(ctx, s.blob);
  check(c == 0, "CHECK_DEVICE_STATE 0 on the destination", fmt::format("{:#x}", c));
  q.start();
  destination_traffic(ctx, *d, q);
}

CONFORM_CASE(migrate_load_after_setup,
             .id = "device_state.migrate_load_after_setup",
             .requirements = {"VU-DEVICE-STATE-RESUME", "VU-CHECK-DEVICE-STATE", "VU-DEVICE-STATE-CHANNEL",
                              "VU-SET-VRING-BASE"},
             .summary = "save on A; on B features, memory and rings (not started) first, then the load from a pipe "
                        "that already holds the state and its EOF; B then starts and carries traffic",
             .device = "vsock",
             .protocol_features = {pf::DEVICE_STATE},
             .timeout_ms = 15000) {
  Source s = run_source(ctx);
  auto d = open_destination(ctx);
  const QemuOptions o = qemu10(false);
  QemuFrontend q = realize_destination(ctx, s, o);
  auto& fe = ctx.fe();
  auto& g = q.guest();
  fe.set_features(qemu_acked_features(ctx, o));
  fe.set_mem_table(ctx.ram().regions(), ctx.ram().dup_fds());
  for (GuestQueue* r : {&g.rx(), &g.tx()}) {
    fe.set_vring_num(r->index(), r->size());
    fe.set_vring_base(r->index(), s.bases[r->index()]);
    fe.set_vring_addr(r->addr());
  }
  Pipe p = make_pipe();
  vhu::UniqueFd rd = std::move(p.rd);
  const bool filled = write_state_and_close(ctx, std::move(p.wr), s.blob);
  check(filled, "the pipe to take the whole state before the request", "the pipe was full");
  auto r = set_state_fd(ctx, vhu::kTransferLoad, vhu::kPhaseStopped, std::move(rd));
  check(!r.error(), "SET_DEVICE_STATE_FD(load, stopped) accepted with the rings set up but stopped",
        fmt::format("error {:#x}", r.value));
  if (r.fd) {
    // The back-end's own channel replaces ours, which was filled in vain.
    write_state_and_close(ctx, std::move(r.fd), s.blob);
  }
  const uint64_t c = check_device_state(ctx);
  check(c == 0, "CHECK_DEVICE_STATE 0 on the destination", fmt::format("{:#x}", c));
  q.start();
  destination_traffic(ctx, *d, q);
}

}  // namespace
}  // namespace conform
