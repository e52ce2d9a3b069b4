// The outcome of one case, as the console, the JUnit report and the exit
// status see it.
#pragma once

#include <string>
#include <vector>

#include "case.h"

namespace conform {

enum class Verdict { Pass, Fail, Skip, Error };

struct CaseResult {
  const CaseInfo* info = nullptr;
  Verdict verdict = Verdict::Error;
  std::string message;      // one line: "expected X; got Y" / skip reason / error
  std::string details;      // multi-line: what was expected and what came, notes
  std::string message_log;  // last messages each way
  std::string backend_command;
  std::string backend_status;
  std::string backend_stderr;
  std::string negotiated;
  // What the case noted, one line ("; " between notes): kept apart from
  // details so that a pass's notes (which kind of socket was not served,
  // what the capabilities said) reach the report too.
  std::string notes;
  std::string timestamp;    // YYYY-MM-DDTHH:MM:SS, local time, no zone
  double seconds = 0;
  bool launch_error = false;    // the back-end could not be started or reached
  bool expected_failure = false;  // --expect listed it and it failed
  bool unexpected_pass = false;   // --expect listed it and it passed
  std::string expect_reason;

  bool counts_as_failure() const {
    return (verdict == Verdict::Fail || verdict == Verdict::Error) && !expected_failure;
  }
};

const char* verdict_name(Verdict v);

}  // namespace conform
