// Sibling VMs: guests whose --vm entries share a group may reach each other's
// CID. The router only answers "who is CID n, and may this VM talk to it".
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace vsockref {

class VsockDevice;

class Router {
 public:
  void add(uint64_t cid, std::set<std::string> groups, VsockDevice* dev);
  void remove(VsockDevice* dev);
  // The device with `to_cid` when it shares a group with `from`, else null.
  VsockDevice* route(const VsockDevice* from, uint64_t to_cid) const;

 private:
  struct Entry {
    uint64_t cid;
    std::set<std::string> groups;
    VsockDevice* dev;
  };
  std::vector<Entry> entries_;
};

}  // namespace vsockref
