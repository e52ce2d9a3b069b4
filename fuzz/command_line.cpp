// Fuzz target `command_line`: vhost-user-vsock-ref's command line
// (reference-backend/cli.*), the options and the --vm mini-language that
// users, scripts and the conformance runner's {socket}/{uds}/{cid}
// templates write, including the forms rust-vmm's vhost-device-vsock takes.
//
// Input: the arguments after the program name, separated by NUL bytes (at
// most 64; an argument cannot contain NUL, as in a real argv).
//
// Invariants: parsing never throws or crashes; settings come back only with
// exit code 0, nothing to print, and VMs that validate_vms() accepts; every
// refusal has a non-zero exit code and says something on stderr; a VM's
// socket is a path or an inherited descriptor (--fd), never both, and --fd
// makes one listening-or-served VM, never a client; exit code 0
// without settings is --help, and prints it, or --print-capabilities, which
// prints the capabilities and nothing else whatever the other arguments.
#include <cstdint>
#include <string>
#include <vector>

#include "cli.h"
#include "fuzz_input.h"

namespace {
constexpr size_t kMaxArgs = 64;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"vhost-user-vsock-ref"};
  std::string cur;
  for (size_t i = 0; i < size && args.size() <= kMaxArgs; ++i) {
    if (data[i] == 0) {
      args.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (args.size() <= kMaxArgs && !cur.empty()) args.push_back(std::move(cur));
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());

  const vsockref::CommandLine cl = vsockref::parse_command_line(static_cast<int>(argv.size()), argv.data());
  if (cl.settings) {
    VHU_FUZZ_CHECK(cl.exit_code == 0 && cl.out.empty() && cl.err.empty());
    VHU_FUZZ_CHECK(!cl.settings->vms.empty());
    VHU_FUZZ_CHECK(vsockref::validate_vms(cl.settings->vms).ok());
    for (const auto& vm : cl.settings->vms) {
      VHU_FUZZ_CHECK(vm.socket.empty() != (vm.socket_fd < 0));
      if (vm.socket_fd >= 0) VHU_FUZZ_CHECK(cl.settings->vms.size() == 1 && !vm.client);
    }
  } else if (vsockref::asks_for_capabilities(static_cast<int>(argv.size()), argv.data())) {
    VHU_FUZZ_CHECK(cl.exit_code == 0 && cl.out == vsockref::capabilities_json() && cl.err.empty());
  } else if (cl.exit_code == 0) {
    VHU_FUZZ_CHECK(cl.out.find("Usage:") != std::string::npos);  // --help
  } else {
    VHU_FUZZ_CHECK(!cl.err.empty());  // a refusal always says why
  }
  return 0;
}
