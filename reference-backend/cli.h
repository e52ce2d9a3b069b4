// Command-line forms shared with rust-vmm's vhost-device-vsock, so one can be
// swapped for the other: --guest-cid/--socket/--uds-path for one VM, or the
// repeatable --vm guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b].
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "log.h"
#include "vhu/result.h"
#include "vm.h"

namespace vsockref {

// What the command line asks for, parsed and checked.
struct Settings {
  std::vector<VmConfig> vms;
  LogLevel log_level = LogLevel::Info;
  std::vector<std::string> faults;  // fault-injection builds only; every name exists
};

// The outcome of parse_command_line(): either settings to run with, or an
// exit code and the text to print instead (--help, --list-faults, or an
// error that names the option and the value).
struct CommandLine {
  std::optional<Settings> settings;
  int exit_code = 0;
  std::string out;  // for stdout
  std::string err;  // for stderr
};

// Parses argv (argv[0] is the program name) as vhost-user-vsock-ref and
// vhost-user-vsock-faulty do. Never throws and never prints: main() decides.
CommandLine parse_command_line(int argc, const char* const* argv);

// --print-capabilities: what the back-end prints (VHostUserBackendCapabilities
// of QEMU's vhost-user.json), and whether argv asks for it at all.
std::string capabilities_json();
bool asks_for_capabilities(int argc, const char* const* argv);

// Parses one --vm value; keys not given keep the values of `defaults`.
vhu::Result<VmConfig> parse_vm_spec(const std::string& spec, const VmConfig& defaults);
// "a+b" -> {a, b}; empty names are an error.
vhu::Result<std::set<std::string>> parse_groups(const std::string& text);
// CIDs valid and distinct, socket and uds paths distinct.
vhu::Result<void> validate_vms(const std::vector<VmConfig>& vms);

}  // namespace vsockref
