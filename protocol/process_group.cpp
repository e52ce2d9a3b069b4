#include "vhu/process_group.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace vhu {

std::vector<GroupMember> process_group_members(pid_t pgid) {
  std::vector<GroupMember> out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(it->path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;  // it ended meanwhile
    // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (!(rest >> state >> ppid >> pgrp) || pgrp != pgid) continue;
    out.push_back({static_cast<pid_t>(std::stol(name)), state, stat.substr(0, close + 1)});
  }
  return out;
}

}  // namespace vhu
