// Proves a negative over a window: the back-end did not signal a call
// eventfd, did not move a used index, did not change any guest-memory byte,
// and sent no message on either socket.
#pragma once

#include <string>
#include <vector>

#include "case.h"

namespace conform {

struct QuietOptions {
  bool calls = true;
  bool used = true;
  bool memory = true;
  bool messages = true;
};

// Watches for `ms` (default: the run's quiet window). Returns what happened
// that should not have; empty when the back-end stayed quiet.
std::vector<std::string> watch_quiet(Ctx& ctx, int ms = -1, QuietOptions opt = {});

// Fails the case when anything happened; `while_what` names the situation.
void expect_quiet(Ctx& ctx, const std::string& while_what, int ms = -1, QuietOptions opt = {});

}  // namespace conform
