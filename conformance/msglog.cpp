#include "msglog.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace conform {

namespace {
const char* arrow(Dir d) {
  switch (d) {
    case Dir::ToBackend: return "->";
    case Dir::FromBackend: return "<-";
    case Dir::BackendReq: return "<= (backend req)";
    case Dir::BackendRsp: return "=> (backend req reply)";
  }
  return "?";
}
vhu::Plane plane_of(Dir d) {
  return (d == Dir::BackendReq || d == Dir::BackendRsp) ? vhu::Plane::Backend : vhu::Plane::Frontend;
}
bool outgoing(Dir d) { return d == Dir::ToBackend || d == Dir::BackendRsp; }
}  // namespace

void MessageLog::record(Dir d, const vhu::Message& m, const std::string& note) {
  if (tap_) tap_(d, m);
  std::string text = vhu::describe(plane_of(d), m);
  if (!note.empty()) text += "  [" + note + "]";
  record_text(d, text);
}

void MessageLog::record_text(Dir d, const std::string& text) {
  std::function<void(const std::string&)> echo;
  std::string line;
  {
    std::lock_guard lock(mu_);
    auto& q = outgoing(d) ? out_ : in_;
    ++counts_[static_cast<int>(d)];
    line = fmt::format("#{:<4} {} {}", ++seq_, arrow(d), text);
    q.push_back({seq_, line});
    while (q.size() > keep_) q.pop_front();
    echo = echo_;
  }
  if (echo) echo(line);
}

uint64_t MessageLog::count(Dir d) const {
  std::lock_guard lock(mu_);
  return counts_[static_cast<int>(d)];
}

std::string MessageLog::render() const {
  std::lock_guard lock(mu_);
  std::vector<const Line*> all;
  for (const auto& l : out_) all.push_back(&l);
  for (const auto& l : in_) all.push_back(&l);
  std::sort(all.begin(), all.end(), [](const Line* a, const Line* b) { return a->seq < b->seq; });
  std::string s = fmt::format("last {} messages each way ({} total exchanged):\n", keep_, seq_);
  if (all.empty()) s += "  (none)\n";
  for (const Line* l : all) s += "  " + l->text + "\n";
  return s;
}

}  // namespace conform
