// Command-line forms shared with rust-vmm's vhost-device-vsock, so one can be
// swapped for the other: --guest-cid/--socket/--uds-path for one VM, or the
// repeatable --vm guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b].
#pragma once

#include <string>
#include <vector>

#include "vhu/result.h"
#include "vm.h"

namespace vsockref {

// Parses one --vm value; keys not given keep the values of `defaults`.
vhu::Result<VmConfig> parse_vm_spec(const std::string& spec, const VmConfig& defaults);
// "a+b" -> {a, b}; empty names are an error.
vhu::Result<std::set<std::string>> parse_groups(const std::string& text);
// CIDs valid and distinct, socket and uds paths distinct.
vhu::Result<void> validate_vms(const std::vector<VmConfig>& vms);

}  // namespace vsockref
