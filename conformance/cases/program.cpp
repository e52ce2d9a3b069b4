// The back-end program conventions (vhost-user.rst, "Backend program
// conventions"): what a management layer relies on when it starts a back-end
// and later stops it. Only a back-end the runner starts (--spawn) can be
// watched and signalled; with --connect or --listen these cases skip.
#include <signal.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

// "A few seconds" after SIGTERM the management layer may send SIGKILL.
constexpr int kSigtermGraceMs = 3000;

Backend& started_backend(Ctx& ctx) {
  if (!ctx.backend().spawned())
    skip("the runner did not start the back-end (--connect or --listen), so it cannot watch or signal the process; "
         "use --spawn");
  return ctx.backend();
}

CONFORM_CASE(no_daemonize,
             .id = "program.no_daemonize",
             .requirements = {"VU-PROGRAM-NO-DAEMONIZE"},
             .summary = "the process the runner started keeps running while its socket is served (it did not daemonize)") {
  Backend& be = started_backend(ctx);
  ctx.handshake();
  // A parent that daemonizes may exit only once its child has taken over.
  std::this_thread::sleep_for(std::chrono::milliseconds(ctx.cfg().quiet_window_ms));
  ctx.expect_alive("after the handshake and a pause");
  check(be.alive(),
        fmt::format("the process the runner started (pid {}) to keep running while its socket is served", be.pid()),
        fmt::format("it {}, and the socket is still answered: another process serves it", be.status_text()),
        "A management layer watches and stops the process it started; a back-end that forks and lets that process "
        "exit leaves it watching nothing.");
}

CONFORM_CASE(sigterm_ends,
             .id = "program.sigterm_ends",
             .requirements = {"VU-PROGRAM-SIGTERM"},
             .summary = "the back-end process ends within 3 s of SIGTERM, with a front-end connected") {
  Backend& be = started_backend(ctx);
  ctx.handshake();
  if (!be.alive()) fail("the back-end running before SIGTERM", be.status_text());
  be.send_signal(SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  const bool ended = be.wait_exit(kSigtermGraceMs);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  check(ended, fmt::format("the process to end within {} ms of SIGTERM", kSigtermGraceMs),
        fmt::format("still running after {} ms", ms),
        "A management layer stops a back-end with SIGTERM and may SIGKILL it a few seconds later; a back-end that "
        "ignores SIGTERM is killed without cleaning up (its socket file stays).");
  ctx.note(fmt::format("ended {} ms after SIGTERM: {}", ms, be.status_text()));
}

}  // namespace
}  // namespace conform
