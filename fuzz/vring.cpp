// Fuzz target `vring`: an adversarial guest-memory image and ring state fed
// to libvhu's device-side split-ring walker, then to the reference back-end's
// vsock tx and rx paths: the same ring is handed to the device as its tx
// queue (every chain read as a guest packet) and then as its rx queue (the
// replies it owes, RSTs mostly, written into whatever the chains point at,
// the rings themselves included).
// Invariants: no crash, no out-of-bounds access (ASan), every popped segment
// lies inside guest memory, and the walker never hands out more chains than
// the ring holds (unless the device's own writes move the avail index: the
// rings and buffers of a hostile guest may overlap).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "backend_process.h"
#include "fuzz_input.h"
#include "log.h"
#include "vhu/guest_memory.h"
#include "vhu/virtqueue.h"
#include "vhu/vsock.h"
#include "vring_layout.h"
#include "vsock_device.h"

namespace {

using namespace vhu::fuzz::vring_layout;

// The fuzzed ring as the vsock device's tx or rx queue; the other queues do
// not exist. A malformed chain stops the ring, as the back-end does.
class OneRing final : public vsockref::RingIo {
 public:
  explicit OneRing(const vhu::GuestMemory& mem) : mem_(mem) {}
  void serve(unsigned which, vhu::DeviceQueue* q) {
    which_ = which;
    q_ = q;
    broken_ = false;
    popped_ = 0;
  }
  bool ring_usable(unsigned q) const override { return q_ && q == which_ && !broken_; }
  bool ring_started(unsigned q) const override { return q_ && q == which_; }
  std::optional<vhu::Chain> pop(unsigned) override {
    auto c = q_->pop();
    if (!c.ok()) {
      broken_ = true;
      return std::nullopt;
    }
    // A ring whose used entries land on its own avail index (rings may
    // overlap) gains a buffer with every push: legal for the walker, which
    // checks each pop, but the run must end.
    if (c->has_value() && ++popped_ > 4 * q_->size()) return std::nullopt;
    return std::move(*c);
  }
  void push(unsigned, uint16_t head, uint32_t written) override { (void)q_->push(head, written); }
  bool rearm(unsigned) override {
    q_->enable_notifications(true);
    return false;  // the guest adds nothing while we run
  }
  const vhu::GuestMemory& memory() const override { return mem_; }
  void request_processing() override {}

 private:
  const vhu::GuestMemory& mem_;
  vhu::DeviceQueue* q_ = nullptr;
  unsigned which_ = 0;
  bool broken_ = false;
  uint32_t popped_ = 0;
};

// Tx, then rx through the same device and ring, so the replies the packets
// earn (RSTs for ports nobody listens on, here every port) are written back
// into the buffers the ring points at.
void run_vsock(const vhu::GuestMemory& mem, const vhu::fuzz::vring_layout::Header& hdr, uint32_t qsize,
               vhu::DeviceQueue::Options opt) {
  using namespace vhu::fuzz::vring_layout;
  auto setup = [&](vhu::DeviceQueue& q) {
    if (!q.setup_gpa(mem, qsize, kRegion0Gpa + hdr.desc_off, kRegion0Gpa + hdr.avail_off,
                     kRegion0Gpa + hdr.used_off, opt)
             .ok())
      return false;
    q.set_last_avail(hdr.last_avail);
    return true;
  };
  vhu::DeviceQueue tx, rx;
  if (!setup(tx)) return;
  OneRing io(mem);
  vsockref::VsockOptions vo;
  vo.name = "fuzz";
  vhu::fuzz::ProcessLoop loop;  // before the device, so it checks the loop once the device is gone
  vsockref::VsockDevice dev(loop.get(), io, vo);
  dev.set_features((hdr.flags >> kVsockFeatureShift) & 7);
  io.serve(vhu::vsock::kTxQueue, &tx);
  dev.process();
  VHU_FUZZ_CHECK(setup(rx));
  io.serve(vhu::vsock::kRxQueue, &rx);
  dev.process();
}

// Guest memory, mapped once for the whole run: a memfd and two mappings per
// input cost more than the walk itself. Each input overwrites all of it (its
// image, zeros past its end), so nothing the device wrote during one input is
// seen by the next.
struct Memory {
  vhu::GuestMemory mem;
  uint8_t* host[2] = {};

  Memory() {
    vhu::UniqueFd fd(memfd_create("vring-fuzz", MFD_CLOEXEC));
    VHU_FUZZ_CHECK(fd.valid() && ftruncate(fd.get(), kMemoryBytes) == 0);
    vhu::UniqueFd fd1(dup(fd.get()));
    VHU_FUZZ_CHECK(mem.add_region({kRegion0Gpa, kRegionBytes, 0x7f0000000000, 0}, std::move(fd)).ok());
    VHU_FUZZ_CHECK(mem.add_region({kRegion1Gpa, kRegionBytes, 0x7f0000100000, kRegionBytes}, std::move(fd1)).ok());
    host[0] = *mem.gpa_to_host(kRegion0Gpa, kRegionBytes);
    host[1] = *mem.gpa_to_host(kRegion1Gpa, kRegionBytes);
  }

  void load(std::span<const uint8_t> image) {
    for (unsigned r = 0; r < 2; ++r) {
      const size_t from = std::min<size_t>(image.size(), r * kRegionBytes);
      const size_t n = std::min<size_t>(image.size() - from, kRegionBytes);
      if (n) std::memcpy(host[r], image.data() + from, n);
      std::memset(host[r] + n, 0, kRegionBytes - n);
    }
  }
};

Memory& memory() {
  static Memory* m = new Memory;  // never destroyed: the engine may exit from any thread
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vhu::fuzz::init_backend_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vhu::fuzz::Input in(data, size);
  const auto hdr = in.take<Header>();
  const uint32_t qsize = 1u << (hdr.size_log2 % (kMaxQueueLog2 + 1));
  Memory& m = memory();
  m.load(in.bytes(kMemoryBytes));
  const vhu::GuestMemory& mem = m.mem;

  vhu::DeviceQueue q;
  vhu::DeviceQueue::Options opt{(hdr.flags & kFlagIndirect) != 0, (hdr.flags & kFlagEventIdx) != 0};
  if (!q.setup_gpa(mem, qsize, kRegion0Gpa + hdr.desc_off, kRegion0Gpa + hdr.avail_off,
                   kRegion0Gpa + hdr.used_off, opt)
           .ok())
    return 0;  // rejected geometry: the walker said no, which is all we ask
  q.set_last_avail(hdr.last_avail);

  // Whether our own writes can move the avail index: the used ring or a
  // writable buffer overlaps it. Until they do, the walker may hand out no
  // more chains than the ring holds.
  const uint64_t avail_lo = kRegion0Gpa + hdr.avail_off, avail_hi = avail_lo + vhu::vring::avail_ring_bytes(qsize);
  const uint64_t used_lo = kRegion0Gpa + hdr.used_off, used_hi = used_lo + vhu::vring::used_ring_bytes(qsize);
  bool avail_written = used_lo < avail_hi && avail_lo < used_hi;
  // Reused: an allocation per chain and per segment showed in the profile.
  static std::vector<uint8_t> buf(4096);
  static std::vector<vhu::HostSpan> spans;
  for (uint32_t popped = 0; popped <= qsize; ++popped) {
    auto r = q.pop();
    if (!r.ok() || !r->has_value()) break;
    VHU_FUZZ_CHECK(popped < qsize || avail_written);  // more chains than the ring holds
    const vhu::Chain& c = **r;
    for (const auto& s : c.segments)
      avail_written = avail_written || (s.writable && s.len && s.gpa < avail_hi && avail_lo < s.gpa + s.len);
    uint64_t readable = 0, writable = 0;
    for (const auto& s : c.segments) {
      // A zero-length buffer touches no memory, so the walker keeps it
      // whatever its address (virtqueue.cpp, ChainBuilder::add).
      spans.clear();
      VHU_FUZZ_CHECK(s.len == 0 || mem.gpa_scatter(s.gpa, s.len, spans).ok());
      (s.writable ? writable : readable) += s.len;
    }
    VHU_FUZZ_CHECK(readable == c.readable_bytes && writable == c.writable_bytes);
    auto got = vhu::read_chain(mem, c, 0, buf);
    VHU_FUZZ_CHECK(got.ok());
    auto put = vhu::write_chain(mem, c, 0, std::span<const uint8_t>(buf.data(), *got));
    VHU_FUZZ_CHECK(put.ok());
    VHU_FUZZ_CHECK(q.push(c.head, static_cast<uint32_t>(*put)).ok());
    (void)q.should_notify();
  }
  q.enable_notifications(true);
  run_vsock(mem, hdr, qsize, opt);
  return 0;
}
