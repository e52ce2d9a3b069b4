// The processes of one process group, read from /proc: what a signal sent to
// the group reaches (the runner waits for them to end), and whose CPU time a
// benchmark adds up.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace vhu {

struct GroupMember {
  pid_t pid;
  char state;         // field 3 of /proc/PID/stat: 'Z' or 'X' once it has ended
  std::string label;  // "pid (comm)"
};

// Every process /proc lists in group `pgid`, ended ones included; empty when
// there is none or /proc cannot be read.
std::vector<GroupMember> process_group_members(pid_t pgid);

}  // namespace vhu
