// How a case ends early: a verdict the back-end author can act on, or a skip
// with its reason. Cases throw these; the runner turns them into results.
#pragma once

#include <string>

namespace conform {

struct CaseSkip {
  std::string reason;
};

struct CaseFailure {
  std::string expected;
  std::string got;
  std::string detail;  // free text: what the case did, why it matters
};

// The back-end could not be started or reached at all (exit status 3 when
// no case got further).
struct LaunchError {
  std::string message;
};

[[noreturn]] inline void skip(std::string reason) { throw CaseSkip{std::move(reason)}; }
[[noreturn]] inline void fail(std::string expected, std::string got, std::string detail = {}) {
  throw CaseFailure{std::move(expected), std::move(got), std::move(detail)};
}
inline void check(bool ok, std::string expected, std::string got, std::string detail = {}) {
  if (!ok) fail(std::move(expected), std::move(got), std::move(detail));
}

}  // namespace conform
