// --profile NAME: spawn presets for the bundled reference back-end and the
// Debian back-ends described in shared/INTEROP.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launcher.h"

namespace conform {

struct Profile {
  std::string name;
  std::string description;
  std::string command;  // {bindir} is the runner's own directory
  std::string device;
};

const std::vector<Profile>& profiles();
// The spec for a profile, with {bindir} resolved; nullopt for an unknown name.
std::optional<TargetSpec> profile_target(const std::string& name, const std::string& bindir);

}  // namespace conform
