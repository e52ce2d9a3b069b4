// Writes seed inputs for the fuzz targets that need structure a mutator
// would take long to find: valid split rings laid out with libvhu's driver
// side, with plain, multi-segment, cross-region and indirect chains.
//   vhu-seedgen CORPUS_DIR
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "vhu/virtqueue_driver.h"
#include "vring_layout.h"

namespace fs = std::filesystem;
using namespace vhu::fuzz::vring_layout;

namespace {

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

// One vring seed: a queue of 2^log2 entries at offset 0, chains from `build`.
template <class Build>
std::vector<uint8_t> vring_seed(uint8_t log2, uint8_t flags, Build build) {
  std::vector<uint8_t> mem(kMemoryBytes, 0);
  vhu::DriverQueue q;
  const uint32_t size = 1u << log2;
  if (!q.init(mem.data(), kRegion0Gpa, size, (flags & kFlagEventIdx) != 0).ok()) std::abort();
  build(q);
  q.publish();
  Header h{log2, flags, 0, 0, static_cast<uint16_t>(q.avail_gpa() - kRegion0Gpa),
           static_cast<uint16_t>(q.used_gpa() - kRegion0Gpa)};
  std::vector<uint8_t> out(sizeof(h));
  std::memcpy(out.data(), &h, sizeof(h));
  // Trailing zeros are implied by the target; keep the seed short.
  size_t end = mem.size();
  while (end > 0 && mem[end - 1] == 0) --end;
  out.insert(out.end(), mem.begin(), mem.begin() + static_cast<long>(end));
  return out;
}

constexpr uint64_t kData = kRegion0Gpa + 0x4000;

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path dir = fs::path(argv[1]) / "vring";
  write_file(dir / "seed-one-readable", vring_seed(4, 0, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b{kData, 64, false};
               (void)q.add({&b, 1});
             }));
  write_file(dir / "seed-read-then-write", vring_seed(4, kFlagEventIdx, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kData, 44, false}, {kData + 64, 100, false}, {kData + 256, 512, true}};
               (void)q.add(b);
               (void)q.add(b);
             }));
  write_file(dir / "seed-cross-region", vring_seed(3, 0, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kRegion1Gpa - 100, 200, true}};
               (void)q.add(b);
             }));
  write_file(dir / "seed-indirect", vring_seed(5, kFlagIndirect | kFlagEventIdx, [](vhu::DriverQueue& q) {
               vhu::DriverBuffer b[] = {{kData, 44, false}, {kData + 64, 64, true}, {kData + 128, 64, true}};
               (void)q.add(b, true);
               (void)q.add(b, false);
             }));
  write_file(dir / "seed-full-ring", vring_seed(7, 0, [](vhu::DriverQueue& q) {
               for (int i = 0; i < 128; ++i) {
                 vhu::DriverBuffer b{kData + 16u * static_cast<unsigned>(i), 16, (i & 1) != 0};
                 (void)q.add({&b, 1});
               }
             }));
  std::printf("seeds written to %s\n", dir.c_str());
  return 0;
}
