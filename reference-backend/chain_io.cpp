#include "chain_io.h"

#include <algorithm>

namespace vsockref {

vhu::Result<uint64_t> chain_iovecs(const vhu::GuestMemory& mem, const vhu::Chain& c, bool writable, uint64_t offset,
                                   uint64_t len, std::vector<iovec>& out) {
  uint64_t done = 0;
  std::vector<vhu::HostSpan> spans;
  for (const vhu::Segment& s : c.segments) {
    if (done == len) break;
    if (s.writable != writable) continue;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(s.len - offset, len - done);
    spans.clear();
    VHU_TRY(mem.gpa_scatter(s.gpa + offset, take, spans));
    for (const vhu::HostSpan& h : spans) out.push_back(iovec{h.ptr, static_cast<size_t>(h.len)});
    done += take;
    offset = 0;
  }
  return done;
}

}  // namespace vsockref
