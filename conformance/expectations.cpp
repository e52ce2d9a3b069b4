#include "expectations.h"

#include <fnmatch.h>

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>

namespace conform {

bool glob_match(const std::string& pattern, const std::string& text) {
  return ::fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

std::vector<Expectation> load_expectations(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read expectations file " + path);
  std::vector<Expectation> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::string reason;
    if (auto h = line.find('#'); h != std::string::npos) {
      reason = line.substr(h + 1);
      line.resize(h);
    }
    auto trim = [](std::string& s) {
      s.erase(0, s.find_first_not_of(" \t\r"));
      s.erase(s.find_last_not_of(" \t\r") + 1);
    };
    trim(line);
    trim(reason);
    if (line.empty()) continue;
    if (line.find_first_of(" \t") != std::string::npos)
      throw std::runtime_error(fmt::format("{}:{}: one case id or glob per line", path, n));
    out.push_back({line, reason});
  }
  return out;
}

const Expectation* find_expectation(const std::vector<Expectation>& e, const std::string& case_id) {
  for (const auto& x : e)
    if (glob_match(x.pattern, case_id)) return &x;
  return nullptr;
}

}  // namespace conform
