// vhost-user-vsock-ref: the command line, signals and the one event loop.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

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
#ifdef VHU_FAULT_INJECTION
  CLI::App app{"vhost-user-vsock-faulty: the reference vhost-user vsock back-end with deliberate faults, "
               "for testing the conformance suite itself"};
#else
  CLI::App app{"vhost-user-vsock-ref: reference vhost-user vsock back-end (virtio-vsock over a vhost-user "
               "socket, host side in the hybrid-vsock Unix-socket convention)"};
#endif
  VmConfig one;
  std::string groups = "default";
  std::string level = "info";
  std::vector<std::string> vm_specs;
  app.add_option("--socket", one.socket, "vhost-user socket path (listened on; see --client)");
  app.add_flag("--client", one.client, "connect to --socket (and reconnect) instead of listening on it");
  app.add_option("--guest-cid", one.guest_cid, "the guest's context id (>= 3)")->capture_default_str();
  app.add_option("--uds-path", one.uds_path,
                 "host side: host programs connect here and write \"CONNECT <port>\\n\"; a guest connecting to "
                 "host port P reaches <uds-path>_P");
  app.add_option("--groups", groups, "sibling groups of this VM, joined with '+'")->capture_default_str();
  app.add_option("--vm", vm_specs,
                 "one VM: guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b][,tx-buffer-size=N][,queue-size=N]; "
                 "repeatable; guests sharing a group can reach each other's CID");
  app.add_option("--tx-buffer-size", one.tx_buffer_size,
                 "bytes buffered per connection towards the host (the buf_alloc the guest sees)")
      ->capture_default_str();
  app.add_option("--queue-size", one.queue_size, "largest virtqueue size accepted (power of two)")
      ->capture_default_str();
  std::string spec = "upstream";
  app.add_option("--spec", spec,
                 "which vhost-user text's ring-start rule to follow: upstream (a ring starts on its first kick) or "
                 "newest (SET_VRING_KICK starts it); the two conflict, see README \"Ring states\"")
      ->check(CLI::IsMember({"upstream", "newest"}))
      ->capture_default_str();
  app.add_option("--log-level", level, "error, warn, info, debug or trace")->capture_default_str();
#ifdef VHU_FAULT_INJECTION
  std::vector<std::string> faults;
  std::string fault_help = "enable a deliberate fault (repeatable):";
  for (const auto& f : all_faults()) fault_help += fmt::format("\n  {}: {}", f.name, f.description);
  app.add_option("--fault", faults, fault_help);
  bool list_faults = false;
  app.add_flag("--list-faults", list_faults, "print the fault names, one per line, and exit");
#endif
  CLI11_PARSE(app, argc, argv);
#ifdef VHU_FAULT_INJECTION
  if (list_faults) {
    for (const auto& f : all_faults()) fmt::print("{}\n", f.name);
    return 0;
  }
#endif

  LogLevel lv;
  if (!parse_log_level(level, lv)) {
    fmt::print(stderr, "--log-level: '{}' is not error, warn, info, debug or trace\n", level);
    return 2;
  }
  set_log_level(lv);
#ifdef VHU_FAULT_INJECTION
  for (const auto& f : faults) {
    if (!enable_fault(f)) {
      fmt::print(stderr, "--fault: no fault named '{}' (see --help)\n", f);
      return 2;
    }
    VLOG(Warn, "fault enabled: {}", f);
  }
#endif

  std::vector<VmConfig> vms;
  auto g = parse_groups(groups);
  if (!g) {
    fmt::print(stderr, "--groups: {}\n", g.message());
    return 2;
  }
  one.groups = *g;
  one.spec = spec == "newest" ? vhu::SpecText::Newest : vhu::SpecText::Upstream;
  if (!vm_specs.empty()) {
    if (!one.socket.empty()) {
      fmt::print(stderr, "give either --socket or --vm, not both\n");
      return 2;
    }
    for (const auto& spec : vm_specs) {
      auto vm = parse_vm_spec(spec, one);
      if (!vm) {
        fmt::print(stderr, "{}\n", vm.message());
        return 2;
      }
      vms.push_back(*vm);
    }
  } else if (!one.socket.empty()) {
    vms.push_back(one);
  }
  if (auto v = validate_vms(vms); !v) {
    fmt::print(stderr, "{}\n", v.message());
    return 2;
  }

  // Signals arrive as loop events, so shutdown runs the normal destructors
  // (which remove the socket files).
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
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
  for (const VmConfig& cfg : vms) {
    running.push_back(std::make_unique<Vm>(loop, cfg, &router));
    if (auto r = running.back()->start(); !r) {
      fmt::print(stderr, "CID {}: {}\n", cfg.guest_cid, r.message());
      return 1;
    }
  }
  loop.run();
  running.clear();
  return 0;
}
