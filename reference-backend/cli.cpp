#include "cli.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <sstream>
#include <string_view>

#include "faults.h"
#include "vhu/vsock.h"

namespace vsockref {

namespace {
#ifdef VHU_FAULT_INJECTION
// Whether the command line names fault f. Parsing stays pure: main() enables
// the faults, so the parse asks the names it was given.
bool names_fault(const std::vector<std::string>& faults, Fault f) {
  const std::string_view name = all_faults()[static_cast<size_t>(f)].name;
  return std::find(faults.begin(), faults.end(), name) != faults.end();
}
#endif

template <class T>
vhu::Result<T> number(const std::string& key, const std::string& v) {
  T out{};
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, out);
  if (ec != std::errc{} || p != end || v.empty())
    return vhu::Err(fmt::format("--vm: {}='{}' is not a number in range", key, v));
  return out;
}
}  // namespace

vhu::Result<std::set<std::string>> parse_groups(const std::string& text) {
  std::set<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t plus = text.find('+', start);
    const std::string g = text.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
    if (g.empty()) return vhu::Err(fmt::format("groups '{}': empty group name", text));
    out.insert(g);
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  return out;
}

vhu::Result<VmConfig> parse_vm_spec(const std::string& spec, const VmConfig& defaults) {
  VmConfig vm = defaults;
  bool have_cid = false, have_socket = false;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return vhu::Err(fmt::format("--vm: '{}' is not key=value", item));
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "guest-cid" || key == "guest_cid") {
      auto n = number<uint64_t>(key, val);
      if (!n) return n.error();
      vm.guest_cid = *n;
      have_cid = true;
    } else if (key == "socket") {
      vm.socket = val;
      have_socket = !val.empty();
    } else if (key == "uds-path" || key == "uds_path") {
      vm.uds_path = val;
    } else if (key == "groups") {
      auto g = parse_groups(val);
      if (!g) return g.error();
      vm.groups = *g;
    } else if (key == "tx-buffer-size" || key == "tx_buffer_size") {
      auto n = number<uint32_t>(key, val);
      if (!n) return n.error();
      vm.tx_buffer_size = *n;
    } else if (key == "queue-size" || key == "queue_size") {
      auto n = number<uint32_t>(key, val);
      if (!n) return n.error();
      vm.queue_size = *n;
    } else {
      return vhu::Err(fmt::format("--vm: unknown key '{}'", key));
    }
  }
  if (!have_cid) return vhu::Err(fmt::format("--vm '{}': guest-cid is missing", spec));
  if (!have_socket) return vhu::Err(fmt::format("--vm '{}': socket is missing", spec));
  return vm;
}

vhu::Result<void> validate_vms(const std::vector<VmConfig>& vms) {
  if (vms.empty()) return vhu::Err("no VM: give --socket or --fd (and --guest-cid, --uds-path) or --vm");
  std::set<uint64_t> cids;
  std::set<std::string> paths;
  for (const VmConfig& vm : vms) {
    if (vm.guest_cid < 3 || vhu::vsock::is_reserved_cid(vm.guest_cid))
      return vhu::Err(fmt::format("guest CID {} is reserved (must be >= 3 and fit in 32 bits)", vm.guest_cid));
    if (!cids.insert(vm.guest_cid).second) return vhu::Err(fmt::format("guest CID {} used twice", vm.guest_cid));
    if (vm.socket_fd < 0) {
      if (vm.socket.empty()) return vhu::Err(fmt::format("CID {}: no vhost-user socket path", vm.guest_cid));
      if (!paths.insert(vm.socket).second) return vhu::Err(fmt::format("path {} used twice", vm.socket));
    }
    if (!vm.uds_path.empty() && !paths.insert(vm.uds_path).second)
      return vhu::Err(fmt::format("path {} used twice", vm.uds_path));
    if (vm.tx_buffer_size == 0) return vhu::Err("tx-buffer-size must be positive");
    if (vm.queue_size == 0 || (vm.queue_size & (vm.queue_size - 1)) || vm.queue_size > 32768)
      return vhu::Err(fmt::format("queue-size {} is not a power of two up to 32768", vm.queue_size));
  }
  return vhu::Ok();
}

std::string capabilities_json() { return "{\"type\": \"vsock\"}\n"; }

bool asks_for_capabilities(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--print-capabilities") return true;
  return false;
}

CommandLine parse_command_line(int argc, const char* const* argv) {
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
  std::string spec = "upstream";
  std::vector<std::string> vm_specs;
  app.add_option("--socket,--socket-path", one.socket,
                 "vhost-user socket path (listened on; see --client); --socket-path is vhost-user.rst's name");
  app.add_flag("--client", one.client, "connect to --socket (and reconnect) instead of listening on it");
  app.add_option("--fd", one.socket_fd,
                 "the vhost-user socket is this inherited file descriptor instead of a path (vhost-user.rst's "
                 "back-end program conventions): a listening socket is accepted on, one front-end after another; "
                 "a connected one is served, and the program ends when its front-end goes");
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
  app.add_option("--spec", spec,
                 "which vhost-user text's ring-start rule to follow: upstream (a ring starts on its first kick) or "
                 "newest (SET_VRING_KICK starts it); the two conflict, see README \"Ring states\"")
      ->check(CLI::IsMember({"upstream", "newest"}))
      ->capture_default_str();
  app.add_option("--log-level", level, "error, warn, info, debug or trace")->capture_default_str();
  bool print_capabilities = false;
  app.add_flag("--print-capabilities", print_capabilities,
               "print the back-end's capabilities as JSON on stdout and exit (vhost-user.rst, back-end program "
               "conventions); every other option is ignored");
  Settings settings;
#ifdef VHU_FAULT_INJECTION
  std::string fault_help = "enable a deliberate fault (repeatable):";
  for (const auto& f : all_faults()) fault_help += fmt::format("\n  {}: {}", f.name, f.description);
  app.add_option("--fault", settings.faults, fault_help);
  bool list_faults = false;
  app.add_flag("--list-faults", list_faults, "print the fault names, one per line, and exit");
#endif

  CommandLine result;
  auto fail = [&](std::string text) {
    result.exit_code = 2;
    result.err = std::move(text) + "\n";
    return result;
  };
  // The other options are ignored, even ones that would not parse.
  auto capabilities = [&] {
    result.out = capabilities_json();
    return result;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (asks_for_capabilities(argc, argv)) return capabilities();
    // CLI11 formats --help and its own errors; they go where it says.
    std::ostringstream out, err;
    result.exit_code = app.exit(e, out, err);
    result.out = out.str();
    result.err = err.str();
    return result;
  }
#ifdef VHU_FAULT_INJECTION
  if (list_faults) {
    for (const auto& f : all_faults()) result.out += fmt::format("{}\n", f.name);
    return result;
  }
  for (const auto& name : settings.faults) {
    bool known = false;
    for (const auto& f : all_faults()) known = known || f.name == name;
    if (!known) return fail(fmt::format("--fault: no fault named '{}' (see --help)", name));
  }
#endif

  bool skip_capabilities = false;
#ifdef VHU_FAULT_INJECTION
  skip_capabilities = names_fault(settings.faults, Fault::no_print_capabilities);
#endif
  // The pre-scan decides, not the parse: where --print-capabilities follows an
  // option that takes a value (`--vm --print-capabilities`), CLI11 takes it as
  // that value, and the management layer that asked would get an error.
  if ((print_capabilities || asks_for_capabilities(argc, argv)) && !skip_capabilities) return capabilities();
#ifdef VHU_FAULT_INJECTION
  // As a program that never heard of the conventions' names fails them.
  for (auto [fault, option] : {std::pair{Fault::no_socket_path, std::string_view("--socket-path")},
                               std::pair{Fault::no_fd, std::string_view("--fd")}}) {
    if (!names_fault(settings.faults, fault)) continue;
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == option || arg.starts_with(std::string(option) + "="))
        return fail(fmt::format("unrecognized option '{}'", arg));
    }
  }
#endif

  if (!parse_log_level(level, settings.log_level))
    return fail(fmt::format("--log-level: '{}' is not error, warn, info, debug or trace", level));
  auto g = parse_groups(groups);
  if (!g) return fail(fmt::format("--groups: {}", g.message()));
  one.groups = *g;
  one.spec = spec == "newest" ? vhu::SpecText::Newest : vhu::SpecText::Upstream;
  if (one.socket_fd != -1) {
    if (one.socket_fd < 0) return fail(fmt::format("--fd: {} is not a file descriptor number", one.socket_fd));
    if (!one.socket.empty()) return fail("--fd and --socket (--socket-path) are incompatible: give one");
    if (one.client) return fail("--client needs a --socket path to connect to, not --fd");
    if (!vm_specs.empty()) return fail("--fd is for one VM: give --fd or --vm, not both");
#ifdef VHU_FAULT_INJECTION
    if (names_fault(settings.faults, Fault::fd_assumes_3)) one.socket_fd = 3;
#endif
    settings.vms.push_back(one);
  } else if (!vm_specs.empty()) {
    if (!one.socket.empty()) return fail("give either --socket or --vm, not both");
    for (const auto& text : vm_specs) {
      auto vm = parse_vm_spec(text, one);
      if (!vm) return fail(vm.message());
      settings.vms.push_back(*vm);
    }
  } else if (!one.socket.empty()) {
    settings.vms.push_back(one);
  }
  if (auto v = validate_vms(settings.vms); !v) return fail(v.message());
  result.settings = std::move(settings);
  return result;
}

}  // namespace vsockref
