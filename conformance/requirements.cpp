#include "requirements.h"

#include <fmt/format.h>
#include <pugixml.hpp>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

namespace conform {

std::string default_requirements_path() {
  if (const char* e = std::getenv("VHU_REQUIREMENTS")) return e;
#ifdef CONFORM_REQUIREMENTS_XML
  return CONFORM_REQUIREMENTS_XML;
#else
  return "spec/requirements.xml";
#endif
}

Requirements Requirements::load(const std::string& path) {
  pugi::xml_document doc;
  auto res = doc.load_file(path.c_str());
  if (!res) throw std::runtime_error(fmt::format("{}: {} (offset {})", path, res.description(), res.offset));
  Requirements r;
  r.path_ = path;
  static const std::set<std::string> levels = {"MUST", "SHOULD", "MAY", "CONVENTION"};
  for (auto n : doc.child("requirements").children("requirement")) {
    Requirement q;
    q.id = n.attribute("id").as_string();
    q.level = n.attribute("level").as_string();
    q.source = n.attribute("source").as_string();
    q.section = n.attribute("section").as_string();
    q.text = n.attribute("text").as_string();
    if (q.id.empty()) throw std::runtime_error(path + ": a requirement without an id");
    if (!levels.count(q.level)) throw std::runtime_error(fmt::format("{}: {}: bad level '{}'", path, q.id, q.level));
    if (q.source.empty() || q.section.empty() || q.text.empty())
      throw std::runtime_error(fmt::format("{}: {}: source, section and text are required", path, q.id));
    for (auto qu : n.children("quote")) {
      std::string t = qu.attribute("text").as_string(q.text.c_str());
      q.quotes.push_back({t, qu.text().as_string()});
    }
    if (q.quotes.empty()) throw std::runtime_error(fmt::format("{}: {}: no <quote>", path, q.id));
    q.not_checked = n.child("not-checked").text().as_string();
    q.note = n.child("note").text().as_string();
    if (r.index_.count(q.id)) throw std::runtime_error(fmt::format("{}: duplicate id {}", path, q.id));
    r.index_[q.id] = r.list_.size();
    r.list_.push_back(std::move(q));
  }
  if (r.list_.empty()) throw std::runtime_error(path + ": no <requirement> under <requirements>");
  return r;
}

const Requirement* Requirements::find(const std::string& id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &list_[it->second];
}

namespace {
std::string squash(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
// The files a quote must be found in; nullopt for a source this catalog does
// not know. Spec texts and QEMU traces come from the spec-sources directory
// (empty: not checked); a guest run was recorded by this project, so it lives
// beside the catalog and is always checked.
std::optional<std::vector<std::string>> files_for(const Requirement& r, const Quote& q,
                                                  const std::string& spec_sources, const std::string& catalog_dir) {
  if (r.source == "guest") return std::vector<std::string>{catalog_dir + "/guest-runs/" + q.text};
  std::vector<std::string> texts;
  if (r.source == "vhost-user") {
    if (q.text != "newest") texts.push_back("vhost-user.qemu-upstream-f6b615b.rst");
    if (q.text != "upstream") texts.push_back("vhost-user.rst");
  } else if (r.source == "virtio") {
    texts.push_back(q.text);
  } else if (r.source == "trace") {
    texts.push_back("../traces/" + q.text);
  } else {
    return std::nullopt;
  }
  if (spec_sources.empty()) return std::vector<std::string>{};
  for (auto& t : texts) t = spec_sources + "/" + t;
  return texts;
}
}  // namespace

std::vector<std::string> check_traceability(const Requirements& reqs, const std::vector<CaseInfo>& cases,
                                            const std::string& spec_sources) {
  std::vector<std::string> bad;
  std::map<std::string, int> covered;
  for (const auto& c : cases) {
    if (c.requirements.empty()) bad.push_back(c.id + ": names no requirement");
    if (c.id.find('.') == std::string::npos) bad.push_back(c.id + ": id is not area.name");
    for (const auto& id : c.requirements) {
      if (!reqs.find(id))
        bad.push_back(fmt::format("{}: unknown requirement id {} (not in {})", c.id, id, reqs.path()));
      else
        ++covered[id];
    }
  }
  for (const auto& r : reqs.all()) {
    if (r.level == "MUST" && !covered.count(r.id) && r.not_checked.empty())
      bad.push_back(fmt::format("{} (MUST, {} {}): no case covers it and no <not-checked> reason is given", r.id,
                                r.source, r.section));
    if (r.level == "CONVENTION" && r.source != "trace" && r.source != "guest")
      bad.push_back(r.id + ": a CONVENTION must cite a trace or a guest run (source=\"trace\" or \"guest\")");
    for (const auto& q : r.quotes) {
      const auto files = files_for(r, q, spec_sources, dir_of(reqs.path()));
      if (!files) {
        bad.push_back(fmt::format("{}: unknown source '{}'", r.id, r.source));
        break;
      }
      for (const auto& f : *files) {
        std::string body = slurp(f);
        if (body.empty()) {
          bad.push_back(fmt::format("{}: cannot read {}", r.id, f));
        } else if (squash(body).find(squash(q.sentence)) == std::string::npos) {
          bad.push_back(fmt::format("{}: quote not found verbatim in {}: \"{}\"", r.id, f, squash(q.sentence)));
        }
      }
    }
  }
  return bad;
}

std::string requirements_report(const Requirements& reqs, const std::vector<std::string>& ids, vhu::SpecText text) {
  const std::string judged = text == vhu::SpecText::Newest ? "newest" : "upstream";
  std::string out;
  for (const auto& id : ids) {
    const Requirement* r = reqs.find(id);
    if (r == nullptr) {
      out += fmt::format("  {}: not in {}\n", id, reqs.path());
      continue;
    }
    const bool spec_text = r->text == "both" || r->text == "upstream" || r->text == "newest";
    out += fmt::format("  {} ({}; {}{}, {})\n", r->id, r->level, r->source,
                       spec_text ? (r->text == "both" ? "" : ", " + r->text + " text only") : ": " + r->text, r->section);
    for (const auto& q : r->quotes) {
      // A sentence of the other vhost-user text is not what this run judged by.
      if ((q.text == "upstream" || q.text == "newest") && q.text != judged) continue;
      out += fmt::format("    \"{}\"\n", squash(q.sentence));
    }
    if (!r->note.empty()) out += fmt::format("    note: {}\n", squash(r->note));
  }
  return out;
}

std::string coverage_table(const Requirements& reqs, const std::vector<CaseInfo>& cases) {
  std::map<std::string, std::vector<std::string>> by_req;
  for (const auto& c : cases)
    for (const auto& id : c.requirements) by_req[id].push_back(c.id);
  std::string out = fmt::format("{:<34} {:<10} {:<8} {}\n", "requirement", "level", "text", "cases");
  size_t musts = 0, covered_musts = 0;
  std::string uncovered;
  for (const auto& r : reqs.all()) {
    const auto& cs = by_req[r.id];
    std::string list;
    for (const auto& c : cs) list += (list.empty() ? "" : ", ") + c;
    if (cs.empty()) list = r.not_checked.empty() ? "-" : "(not checked)";
    out += fmt::format("{:<34} {:<10} {:<8} {}\n", r.id, r.level, r.text, list);
    if (r.level == "MUST") {
      ++musts;
      if (!cs.empty()) ++covered_musts;
      else uncovered += fmt::format("  {}: {}\n", r.id, r.not_checked.empty() ? "NO REASON GIVEN" : r.not_checked);
    }
  }
  out += fmt::format("\n{} requirements, {} MUST ({} covered by a case)\n", reqs.all().size(), musts, covered_musts);
  if (!uncovered.empty()) out += "MUSTs no case checks, and why:\n" + uncovered;
  return out;
}

}  // namespace conform
