// Fuzz target `vring`: an adversarial guest-memory image and ring state fed
// to libvhu's device-side split-ring walker. Invariants: no crash, no
// out-of-bounds access (ASan), every popped segment lies inside guest memory,
// and the walker never hands out more chains than were made available.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "fuzz_input.h"
#include "vhu/guest_memory.h"
#include "vhu/virtqueue.h"
#include "vring_layout.h"

namespace {

using namespace vhu::fuzz::vring_layout;

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::Input in(data, size);
  const auto hdr = in.take<Header>();
  const uint32_t qsize = 1u << (hdr.size_log2 % (kMaxQueueLog2 + 1));
  const auto image = in.bytes(kMemoryBytes);

  vhu::UniqueFd fd(memfd_create("vring-fuzz", MFD_CLOEXEC));
  check(fd.valid() && ftruncate(fd.get(), kMemoryBytes) == 0);
  if (!image.empty()) check(pwrite(fd.get(), image.data(), image.size(), 0) == static_cast<ssize_t>(image.size()));

  vhu::GuestMemory mem;
  vhu::UniqueFd fd1(dup(fd.get()));
  check(mem.add_region({kRegion0Gpa, kRegionBytes, 0x7f0000000000, 0}, std::move(fd)).ok());
  check(mem.add_region({kRegion1Gpa, kRegionBytes, 0x7f0000100000, kRegionBytes}, std::move(fd1)).ok());

  vhu::DeviceQueue q;
  vhu::DeviceQueue::Options opt{(hdr.flags & kFlagIndirect) != 0, (hdr.flags & kFlagEventIdx) != 0};
  if (!q.setup_gpa(mem, qsize, kRegion0Gpa + hdr.desc_off, kRegion0Gpa + hdr.avail_off,
                   kRegion0Gpa + hdr.used_off, opt)
           .ok())
    return 0;  // rejected geometry: the walker said no, which is all we ask
  q.set_last_avail(hdr.last_avail);

  std::vector<uint8_t> buf(4096);
  for (uint32_t popped = 0; popped <= qsize; ++popped) {
    auto r = q.pop();
    if (!r.ok() || !r->has_value()) break;
    check(popped < qsize);  // more chains than the ring can hold were handed out
    const vhu::Chain& c = **r;
    uint64_t readable = 0, writable = 0;
    for (const auto& s : c.segments) {
      std::vector<vhu::HostSpan> spans;
      check(mem.gpa_scatter(s.gpa, s.len, spans).ok());
      (s.writable ? writable : readable) += s.len;
    }
    check(readable == c.readable_bytes && writable == c.writable_bytes);
    auto got = vhu::read_chain(mem, c, 0, buf);
    check(got.ok());
    auto put = vhu::write_chain(mem, c, 0, std::span<const uint8_t>(buf.data(), *got));
    check(put.ok());
    check(q.push(c.head, static_cast<uint32_t>(*put)).ok());
    (void)q.should_notify();
  }
  q.enable_notifications(true);
  return 0;
}
