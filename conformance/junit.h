// JUnit XML that both CI schemas accept (windyroad JUnit.xsd and Jenkins
// xunit junit-10.xsd): one <testsuite> per area inside <testsuites>.
#pragma once

#include <string>
#include <vector>

#include "result.h"

namespace conform {

struct RunInfo {
  std::string backend;   // target description
  std::string spec_text; // upstream | newest
  std::string hostname;
};

// Seconds with exactly three decimals: junit-10.xsd allows no more.
std::string format_seconds(double s);
// YYYY-MM-DDTHH:MM:SS, no zone (windyroad).
std::string format_timestamp(std::time_t t);

// Throws std::runtime_error when the file cannot be written.
void write_junit(const std::string& path, const std::vector<CaseResult>& results, const RunInfo& run);

}  // namespace conform
