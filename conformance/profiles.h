// --profile NAME: spawn presets for the bundled reference back-end and the
// Debian back-ends described in shared/INTEROP.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launcher.h"
#include "vhu/features.h"

namespace conform {

struct Profile {
  std::string name;
  std::string description;
  // {bindir} is the runner's own directory; {spec} the text judged by
  // (--spec), for a back-end that can follow either where they conflict.
  std::string command;
  std::string device;
  // The same back-end serving two VMs that share a sibling group, for the
  // cases that need one ("" = the back-end has no such mode).
  std::string siblings_command = {};
};

const std::vector<Profile>& profiles();
// The spec for a profile, with {bindir} and {spec} resolved; nullopt for an
// unknown name. `siblings`: the two-VM template instead, nullopt when the
// profile has none.
std::optional<TargetSpec> profile_target(const std::string& name, const std::string& bindir, vhu::SpecText spec,
                                         bool siblings = false);

}  // namespace conform
