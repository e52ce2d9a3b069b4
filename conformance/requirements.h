// spec/requirements.xml: every rule the suite checks, with its level, source
// text, section and the quoted normative sentence.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "case.h"
#include "vhu/features.h"

namespace conform {

struct Quote {
  std::string text;  // "upstream", "newest", "both", or a trace file
  std::string sentence;
};

struct Requirement {
  std::string id;
  std::string level;    // MUST SHOULD MAY CONVENTION
  std::string source;   // vhost-user, virtio, trace, guest
  std::string section;
  std::string text;     // which spec text: upstream | newest | both (CONVENTION: the trace or guest-run file)
  std::vector<Quote> quotes;
  std::string not_checked;  // reason, for a MUST no case covers
  std::string note;         // where the spec and a real front-end disagree, or how it is checked
};

class Requirements {
 public:
  // Throws std::runtime_error with the file and the problem.
  static Requirements load(const std::string& path);
  const Requirement* find(const std::string& id) const;
  const std::vector<Requirement>& all() const { return list_; }
  const std::string& path() const { return path_; }

 private:
  std::vector<Requirement> list_;
  std::map<std::string, size_t> index_;
  std::string path_;
};

// Where requirements.xml is: --requirements-file, $VHU_REQUIREMENTS, next to
// the binary's source tree (compiled in), in that order.
std::string default_requirements_path();

// Problems that make the traceability test fail: unknown ids in cases, MUSTs
// neither covered nor explained, quotes not found in the spec texts (when
// spec_sources names the directory holding them).
std::vector<std::string> check_traceability(const Requirements& reqs, const std::vector<CaseInfo>& cases,
                                            const std::string& spec_sources = {});

// For a failure report: each of `ids` with its level, source and section, the
// sentences that apply under `text`, and its note, so a back-end's author can
// read what the verdict rests on without the catalog at hand.
std::string requirements_report(const Requirements& reqs, const std::vector<std::string>& ids, vhu::SpecText text);

// The --requirements table: requirement -> cases, and uncovered MUSTs with reasons.
std::string coverage_table(const Requirements& reqs, const std::vector<CaseInfo>& cases);

}  // namespace conform
