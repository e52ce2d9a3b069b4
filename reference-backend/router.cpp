#include "router.h"

#include <algorithm>

namespace vsockref {

void Router::add(uint64_t cid, std::set<std::string> groups, VsockDevice* dev) {
  entries_.push_back(Entry{cid, std::move(groups), dev});
}

void Router::remove(VsockDevice* dev) {
  std::erase_if(entries_, [&](const Entry& e) { return e.dev == dev; });
}

VsockDevice* Router::route(const VsockDevice* from, uint64_t to_cid) const {
  const Entry* src = nullptr;
  const Entry* dst = nullptr;
  for (const Entry& e : entries_) {
    if (e.dev == from) src = &e;
    if (e.cid == to_cid) dst = &e;
  }
  if (!src || !dst || dst->dev == from) return nullptr;
  for (const auto& g : src->groups)
    if (dst->groups.count(g)) return dst->dev;
  return nullptr;
}

}  // namespace vsockref
