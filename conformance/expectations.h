// --expect FILE: known failures. One case id (or glob) per line, optional
// "# reason". A listed case that fails is reported as expected and does not
// fail the run; a listed case that passes is flagged.
#pragma once

#include <string>
#include <vector>

namespace conform {

struct Expectation {
  std::string pattern;
  std::string reason;
};

// Throws std::runtime_error naming the file and line.
std::vector<Expectation> load_expectations(const std::string& path);
const Expectation* find_expectation(const std::vector<Expectation>& e, const std::string& case_id);

// fnmatch-style glob: * and ? and [..].
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace conform
