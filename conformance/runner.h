// Runs the selected cases, in parallel when each gets its own back-end, with
// a per-case deadline after which a hung back-end is killed.
#pragma once

#include <string>
#include <vector>

#include "case.h"
#include "expectations.h"
#include "result.h"

namespace conform {

struct RunnerOptions {
  int jobs = 1;
  bool progress = true;   // a live progress line on stderr
  std::vector<Expectation> expectations;
};

std::vector<CaseResult> run_cases(const std::vector<const CaseInfo*>& cases, const RunConfig& cfg,
                                  const RunnerOptions& opt);
CaseResult run_one(const CaseInfo& c, const RunConfig& cfg, uint64_t cid);

// --filter: patterns in order; a leading '-' excludes. With no including
// pattern everything is included first.
std::vector<const CaseInfo*> select_cases(const std::vector<CaseInfo>& all, const std::vector<std::string>& filters);

std::string summary(const std::vector<CaseResult>& results, double wall_seconds);

}  // namespace conform
