#include "junit.h"

#include <unistd.h>

#include <fmt/format.h>
#include <pugixml.hpp>

#include <ctime>
#include <map>
#include <stdexcept>

namespace conform {

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Pass: return "PASS";
    case Verdict::Fail: return "FAIL";
    case Verdict::Skip: return "SKIP";
    case Verdict::Error: return "ERROR";
  }
  return "?";
}

std::string format_seconds(double s) {
  if (s < 0) s = 0;
  return fmt::format("{:.3f}", s);
}

std::string format_timestamp(std::time_t t) {
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

namespace {
// XML 1.0 cannot carry most control characters, and back-end stderr may hold anything.
std::string xml_safe(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 && c != '\n' && c != '\t' && c != '\r')
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  // Invalid UTF-8 would make the document unparsable: replace bytes >= 0x80 that do not form valid sequences.
  std::string fixed;
  for (size_t i = 0; i < out.size();) {
    unsigned char c = static_cast<unsigned char>(out[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= out.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(out[i + k]) >> 6) == 2;
    if (ok) {
      fixed.append(out, i, n);
      i += n;
    } else {
      fixed += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  return fixed;
}

void property(pugi::xml_node props, const std::string& name, const std::string& value) {
  auto p = props.append_child("property");
  p.append_attribute("name") = name.c_str();
  p.append_attribute("value") = xml_safe(value).c_str();
}
}  // namespace

void write_junit(const std::string& path, const std::vector<CaseResult>& results, const RunInfo& run) {
  pugi::xml_document doc;
  auto decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  // windyroad allows no attributes on <testsuites>.
  auto suites = doc.append_child("testsuites");

  std::map<std::string, std::vector<const CaseResult*>> by_area;
  std::vector<std::string> order;
  for (const auto& r : results) {
    auto area = r.info->area();
    if (!by_area.count(area)) order.push_back(area);
    by_area[area].push_back(&r);
  }
  int suite_id = 0;
  for (const auto& area : order) {
    const auto& rs = by_area[area];
    int failures = 0, errors = 0, skipped = 0;
    double time = 0;
    for (const auto* r : rs) {
      time += r->seconds;
      if (r->expected_failure || r->verdict == Verdict::Skip) ++skipped;
      else if (r->verdict == Verdict::Fail) ++failures;
      else if (r->verdict == Verdict::Error) ++errors;
    }
    auto s = suites.append_child("testsuite");
    s.append_attribute("name") = area.c_str();
    s.append_attribute("package") = ("vhost-user-conform." + area).c_str();
    s.append_attribute("id") = suite_id++;
    s.append_attribute("timestamp") = rs.front()->timestamp.c_str();
    s.append_attribute("hostname") = run.hostname.empty() ? "localhost" : run.hostname.c_str();
    s.append_attribute("tests") = static_cast<int>(rs.size());
    s.append_attribute("failures") = failures;
    s.append_attribute("errors") = errors;
    s.append_attribute("skipped") = skipped;
    s.append_attribute("time") = format_seconds(time).c_str();

    // windyroad: properties first, exactly once; testcases cannot hold properties,
    // so per-case facts are suite properties named after the case.
    auto props = s.append_child("properties");
    property(props, "backend.command", run.backend);
    property(props, "spec.text", run.spec_text);
    for (const auto* r : rs) {
      const auto& id = r->info->id;
      std::string reqs;
      for (const auto& q : r->info->requirements) reqs += (reqs.empty() ? "" : " ") + q;
      property(props, id + ".requirements", reqs);
      property(props, id + ".backend", r->backend_command);
      property(props, id + ".negotiated", r->negotiated);
      if (!r->notes.empty()) property(props, id + ".notes", r->notes);
      if (r->info->spec_dependent) property(props, id + ".spec_dependent", "verdict differs between the spec texts; judged by " + run.spec_text);
      if (r->unexpected_pass) property(props, id + ".unexpected_pass", "listed in --expect but passed: " + r->expect_reason);
    }
    for (const auto* r : rs) {
      auto tc = s.append_child("testcase");
      tc.append_attribute("name") = r->info->name().c_str();
      tc.append_attribute("classname") = ("vhost-user-conform." + area).c_str();
      tc.append_attribute("time") = format_seconds(r->seconds).c_str();
      std::string body = r->details;
      if (!r->message_log.empty()) body += "\n" + r->message_log;
      body += "\nback-end: " + r->backend_status + "\n";
      if (r->expected_failure) {
        auto k = tc.append_child("skipped");
        k.append_attribute("message") =
            xml_safe(fmt::format("known failure ({}): {}", r->expect_reason, r->message)).c_str();
        k.text().set(xml_safe(body).c_str());
      } else if (r->verdict == Verdict::Skip) {
        tc.append_child("skipped").append_attribute("message") = xml_safe(r->message).c_str();
      } else if (r->verdict == Verdict::Fail || r->verdict == Verdict::Error) {
        auto f = tc.append_child(r->verdict == Verdict::Fail ? "failure" : "error");
        f.append_attribute("message") = xml_safe(r->message).c_str();
        f.append_attribute("type") = r->verdict == Verdict::Fail ? "conformance" : (r->launch_error ? "launch" : "runner");
        f.text().set(xml_safe(body).c_str());
      }
    }
    std::string out, err;
    for (const auto* r : rs) {
      // A pass has no message; what it noted stands in its place.
      out += fmt::format("{} {} ({} s) {}\n", verdict_name(r->verdict), r->info->id, format_seconds(r->seconds),
                         r->verdict == Verdict::Pass ? r->notes : r->message);
      if (r->backend_stderr.empty()) continue;
      const bool bad = r->verdict == Verdict::Fail || r->verdict == Verdict::Error;
      std::string text = r->backend_stderr;
      // Keep the report small for cases that went well.
      if (!bad && text.size() > 2048) text = "[...]\n" + text.substr(text.size() - 2048);
      err += fmt::format("==== {}: {} ====\n{}\n", r->info->id, r->backend_status, text);
    }
    s.append_child("system-out").text().set(xml_safe(out).c_str());
    s.append_child("system-err").text().set(xml_safe(err).c_str());
  }
  if (!doc.save_file(path.c_str(), "  ", pugi::format_default, pugi::encoding_utf8))
    throw std::runtime_error("cannot write JUnit report " + path);
}

}  // namespace conform
