// The back-end program conventions (vhost-user.rst, "Backend program
// conventions"): what a management layer relies on when it starts a back-end
// and later stops it. Only a back-end the runner starts (--spawn) can be
// watched and signalled; with --connect or --listen these cases skip.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "common.h"
#include "json.h"

namespace conform {
namespace {

// "A few seconds" after SIGTERM the management layer may send SIGKILL.
constexpr int kSigtermGraceMs = 3000;
// --print-capabilities only prints: a second or two even for a slow start.
constexpr int kCapabilitiesMs = 3000;

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
  // To the group: a command that wraps the back-end (sh -c '...') would
  // otherwise end alone and leave the back-end running.
  be.send_signal(SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  std::string left;
  const bool ended = be.wait_group_exit(kSigtermGraceMs, &left);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  check(ended, fmt::format("the process (and its process group) to end within {} ms of SIGTERM", kSigtermGraceMs),
        fmt::format("still running after {} ms: {}", ms, left),
        "A management layer stops a back-end with SIGTERM and may SIGKILL it a few seconds later; a back-end that "
        "ignores SIGTERM is killed without cleaning up (its socket file stays).");
  ctx.note(fmt::format("ended {} ms after SIGTERM: {}", ms, be.status_text()));
}

// The command's text up to n bytes, on one line, for a verdict.
std::string excerpt(std::string text, size_t n = 200) {
  if (text.size() > n) text = text.substr(0, n) + "...";
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text.empty() ? "(nothing)" : text;
}

CONFORM_CASE(print_capabilities,
             .id = "program.print_capabilities",
             .requirements = {"VU-PROGRAM-PRINT-CAPABILITIES"},
             .summary = "the back-end's command with --print-capabilities added prints a JSON object with a \"type\" "
                        "string on stdout and exits 0 without serving") {
  Backend& be = started_backend(ctx);
  // The same command with placeholders of its own, so that a back-end that
  // ignores the option and starts takes no socket of the running one.
  Placeholders ph = be.placeholders();
  ph.set_dir(ph.dir + "/caps");
  std::error_code ec;
  std::filesystem::create_directory(ph.dir, ec);
  if (ec) fail("a directory for the second run", ph.dir + ": " + ec.message());
  const std::string command = substitute(ctx.cfg().target.command, ph) + " --print-capabilities";
  auto run = run_command(command, std::min(kCapabilitiesMs, ctx.remaining_ms()));
  if (!run) fail("the command to start: " + command, run.message());
  const std::string what = "`" + command + "`";
  check(run->ended, what + " to print its capabilities and exit",
        fmt::format("{}; stdout: {}; stderr: {}", run->status_text(), excerpt(run->out), excerpt(run->err)),
        "Other options should be ignored and the program should not perform its normal function: a management "
        "layer runs the command to learn what the back-end is.");
  check(WIFEXITED(run->wstatus) && WEXITSTATUS(run->wstatus) == 0, what + " to exit successfully (status 0)",
        fmt::format("{}; stderr: {}", run->status_text(), excerpt(run->err)));
  auto doc = parse_json(run->out);
  check(doc.ok(), "its stdout to be JSON",
        (doc.ok() ? std::string() : doc.message()) + "; stdout: " + excerpt(run->out));
  check(doc->kind == JsonValue::Kind::Object, "a JSON object (VHostUserBackendCapabilities)",
        std::string(json_kind_name(doc->kind)) + ": " + excerpt(run->out));
  const JsonValue* type = doc->member("type");
  check(type && type->kind == JsonValue::Kind::String, "a \"type\" member that is a string (the back-end type)",
        type ? std::string(json_kind_name(type->kind)) : "no \"type\" member: " + excerpt(run->out));
  ctx.note("capabilities: " + excerpt(run->out, 400));
}

}  // namespace
}  // namespace conform
