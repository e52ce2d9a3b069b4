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
#include "vhu/channel.h"

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

// The end of a back-end's stderr, where a refusal is; all of it when the
// back-end is ending, which is when it matters.
std::string stderr_tail(const Backend& be) {
  (void)be.wait_stderr_closed(1000);
  std::string text = be.stderr_text();
  if (text.size() > 300) text = "..." + text.substr(text.size() - 300);
  return excerpt(text, 400);
}

// The run's command with the option that gives {socket} replaced by `option`.
TargetSpec with_socket_option(Ctx& ctx, const std::string& option) {
  TargetSpec t = ctx.cfg().target;
  auto command = replace_socket_option(t.command, option);
  if (!command)
    skip("the command does not give {socket} as the whole value of one option (`--opt {socket}` or "
         "`--opt={socket}`), so the case cannot tell what to replace with " + option);
  t.command = *command;
  return t;
}

CONFORM_CASE(socket_path,
             .id = "program.socket_path",
             .requirements = {"VU-PROGRAM-SOCKET-PATH"},
             .summary = "the back-end's command with its socket option replaced by --socket-path=PATH serves PATH") {
  started_backend(ctx);
  if (ctx.cfg().target.command.find("--socket-path={socket}") != std::string::npos)
    ctx.note("the command gives the socket as --socket-path={socket} already");
  const TargetSpec t = with_socket_option(ctx, "--socket-path={socket}");
  auto b = Backend::launch(t, ctx.cid());
  if (!b) fail("the back-end to start with --socket-path", b.message());
  Backend& be = **b;
  ctx.log().record_text(Dir::ToBackend, "(a second back-end process: " + be.command_line() + ")");
  auto s = be.connect(std::min(ctx.remaining_ms(), t.start_timeout_ms));
  check(s.ok(), "`" + be.command_line() + "` to serve the path given with --socket-path",
        s ? "" : fmt::format("{}; stderr: {}", s.message(), stderr_tail(be)),
        "--socket-path=PATH is how a management layer names the socket of any back-end that follows the "
        "conventions.");
  Frontend fe(std::move(*s), ctx.log(), ctx.deadline());
  fe.get_features();
}

// One way of handing the socket over as --fd: a listening socket (what
// libvirt gives virtiofsd) or one end of a connected pair (what it gives
// vhost-user-gpu). `why` is empty when the back-end answered GET_FEATURES on
// it.
struct Handover {
  std::string command;
  std::string why;
};
Handover serve_inherited(Ctx& ctx, TargetSpec t, bool listening) {
  const char* kind = listening ? "listening" : "connected";
  vhu::UniqueFd handed, ours;
  // In the case's back-end directory, which goes with it.
  const std::string path = ctx.backend().placeholders().dir + "/inherited.sock";
  if (listening) {
    auto l = vhu::listen_unix(path);
    if (!l) fail("a listening socket to hand over", path + ": " + l.message());
    handed = std::move(*l);
  } else {
    auto pair = vhu::socket_pair();
    if (!pair) fail("a socket pair to hand over", pair.message());
    ours = std::move(pair->first);
    handed = std::move(pair->second);
  }
  t.inherit_fd = handed.get();
  auto b = Backend::launch(t, ctx.cid());
  if (!b) fail("the back-end to start with --fd", b.message());
  Backend& be = **b;
  ctx.log().record_text(Dir::ToBackend, fmt::format("(a second back-end process, given a {} socket as fd {}: {})",
                                                    kind, kInheritedFd, be.command_line()));
  // Only the back-end holds it now: if it exits, the connection ends at once
  // instead of waiting for a reply that cannot come.
  handed.reset();
  // Status after stderr: a refusing back-end is still exiting when its end
  // of the connection closes.
  auto why = [&be](const std::string& what) {
    const std::string err = stderr_tail(be);
    return fmt::format("{}; back-end {}; stderr: {}", what, be.status_text(), err);
  };
  if (listening) {
    auto c = vhu::connect_unix(path);
    if (!c) return {be.command_line(), why("connecting to it: " + c.message())};
    ours = std::move(*c);
  }
  Frontend fe(std::move(ours), ctx.log(), ctx.deadline());
  auto o = fe.try_request(vhu::Message::empty(static_cast<uint32_t>(vhu::FrontendReq::GET_FEATURES)),
                          std::min(ctx.remaining_ms(), t.start_timeout_ms));
  if (o.kind == Outcome::Reply && o.reply.payload.size() == 8) return {be.command_line(), {}};
  return {be.command_line(), why("GET_FEATURES: " + o.text)};
}

static_assert(kInheritedFd == 7, "program.fd's summary names the descriptor number");
CONFORM_CASE(fd,
             .id = "program.fd",
             .requirements = {"VU-PROGRAM-FD"},
             .summary = "the back-end's command with its socket option replaced by --fd=7 serves the socket it "
                        "inherits as fd 7, listening or connected") {
  started_backend(ctx);
  if (ctx.cfg().target.backend_connects)
    skip("--backend-connects: the command makes the back-end connect to {socket}; a socket handed over with --fd "
         "takes the place of one it would listen on");
  const TargetSpec t = with_socket_option(ctx, fmt::format("--fd={}", kInheritedFd));
  const Handover l = serve_inherited(ctx, t, true);
  const Handover c = serve_inherited(ctx, t, false);
  const std::string& listening = l.why;
  const std::string& connected = c.why;
  check(listening.empty() || connected.empty(),
        fmt::format("`{}` to serve the socket it inherits as fd {}, a listening one or a connected one", l.command,
                    kInheritedFd),
        "listening: " + listening + "; connected: " + connected,
        "--fd=FDNUM is how a management layer hands a back-end its socket ready-made (libvirt passes a listening "
        "socket to virtiofsd and one end of a socketpair to vhost-user-gpu).");
  // The text does not say which kind: serving one is a pass, and the note says
  // what the other got.
  if (!listening.empty()) ctx.note("a listening socket was not served: " + listening);
  if (!connected.empty()) ctx.note("a connected socket was not served: " + connected);
  if (listening.empty() && connected.empty()) ctx.note("served both a listening and a connected socket");
}

}  // namespace
}  // namespace conform
