// vhost-user-vsock-ref: signals and the one event loop (the command line is cli.cpp's).
#include <fmt/format.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "event_loop.h"
#include "faults.h"
#include "log.h"
#include "router.h"
#include "vm.h"

using namespace vsockref;

int main(int argc, char** argv) {
  CommandLine cl = parse_command_line(argc, argv);
  fmt::print(stdout, "{}", cl.out);
  fmt::print(stderr, "{}", cl.err);
  if (!cl.settings) return cl.exit_code;
  set_log_level(cl.settings->log_level);
#ifdef VHU_FAULT_INJECTION
  for (const auto& f : cl.settings->faults) {
    (void)enable_fault(f);  // the name was checked
    VLOG(Warn, "fault enabled: {}", f);
  }
#endif

  // Signals arrive as loop events, so shutdown runs the normal destructors
  // (which remove the socket files).
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (VSOCKREF_FAULT(ignore_sigterm)) {
    sigdelset(&mask, SIGTERM);
    ::signal(SIGTERM, SIG_IGN);
  }
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  vhu::UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

  EventLoop loop;
  if (!loop.valid() || !sfd) {
    fmt::print(stderr, "cannot set up epoll/signalfd\n");
    return 1;
  }
  (void)loop.add(sfd.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo si;
    if (::read(sfd.get(), &si, sizeof si) == sizeof si) VLOG(Info, "signal {}: exiting", si.ssi_signo);
    loop.stop();
  });

  Router router;
  std::vector<std::unique_ptr<Vm>> running;
  for (const VmConfig& cfg : cl.settings->vms) {
    running.push_back(std::make_unique<Vm>(loop, cfg, &router));
    running.back()->on_done = [&loop] { loop.stop(); };
    if (auto r = running.back()->start(); !r) {
      fmt::print(stderr, "CID {}: {}\n", cfg.guest_cid, r.message());
      return 1;
    }
  }
  if (VSOCKREF_FAULT(daemonize)) {
    const pid_t child = ::fork();
    if (child < 0) VLOG(Error, "fork: {}", std::strerror(errno));
    if (child > 0) ::_exit(0);
  }
  loop.run();
  running.clear();
  return 0;
}
