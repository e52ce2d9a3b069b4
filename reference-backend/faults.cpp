#include "faults.h"

#include <array>

namespace vsockref {

const std::vector<FaultInfo>& all_faults() {
  static const std::vector<FaultInfo> list = {
#define VSOCKREF_X(name, text) {#name, text},
      VSOCKREF_FAULTS(VSOCKREF_X)
#undef VSOCKREF_X
  };
  return list;
}

#ifdef VHU_FAULT_INJECTION
namespace {
// Process-wide on purpose: faults are set once from the command line of a
// test-only binary, before any VM runs.
std::array<bool, static_cast<size_t>(Fault::count_)> g_enabled{};
}  // namespace

bool fault_enabled(Fault f) { return g_enabled[static_cast<size_t>(f)]; }

bool enable_fault(std::string_view name) {
  const auto& list = all_faults();
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].name == name) {
      g_enabled[i] = true;
      return true;
    }
  }
  return false;
}

void clear_faults() { g_enabled.fill(false); }
#endif

}  // namespace vsockref
