#include "vhu/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <limits>

namespace vhu {
namespace {

constexpr uint64_t kTop = std::numeric_limits<uint64_t>::max();

UniqueFd memfd(uint64_t size) {
  UniqueFd fd(memfd_create("vhu-guest-memory-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

MemoryRegion region(uint64_t gpa, uint64_t size, uint64_t uva, uint64_t offset = 0) {
  return MemoryRegion{gpa, size, uva, offset};
}

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- rejection scenarios, each also run by the fd-leak test ----

void zero_size() {
  GuestMemory mem;
  auto r = mem.add_region(region(0x1000, 0, 0x7000), memfd(0x1000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "memory_size is 0")) << r.message();
  EXPECT_EQ(mem.num_regions(), 0u);
}

void overlap_gpa() {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x10000, 0x2000, 0x100000), memfd(0x2000)).ok());
  auto r = mem.add_region(region(0x11fff, 0x1000, 0x200000), memfd(0x1000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "region 1: guest_phys_addr 0x11fff")) << r.message();
  EXPECT_TRUE(has(r.message(), "overlaps region 0")) << r.message();
  // Containment is overlap too.
  EXPECT_FALSE(mem.add_region(region(0xf000, 0x10000, 0x300000), memfd(0x10000)).ok());
  EXPECT_EQ(mem.num_regions(), 1u);
}

void overlap_uva() {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x10000, 0x2000, 0x100000), memfd(0x2000)).ok());
  auto r = mem.add_region(region(0x40000, 0x1000, 0x101000), memfd(0x1000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "userspace_addr 0x101000")) << r.message();
  EXPECT_TRUE(has(r.message(), "overlaps region 0")) << r.message();
  EXPECT_EQ(mem.num_regions(), 1u);
}

void mmap_offset_beyond_file() {
  GuestMemory mem;
  auto r = mem.add_region(region(0, 0x2000, 0x100000, 0x1001), memfd(0x3000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "region 0: mmap_offset 0x1001 + memory_size 0x2000 exceeds file size 0x3000"))
      << r.message();
  // Exactly at the end of the file is fine.
  EXPECT_TRUE(mem.add_region(region(0, 0x2000, 0x100000, 0x1000), memfd(0x3000)).ok());
}

void wraps() {
  GuestMemory mem;
  auto r = mem.add_region(region(kTop - 0xfff, 0x2000, 0x100000), memfd(0x2000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "guest_phys_addr 0xfffffffffffff000 + memory_size 0x2000 wraps")) << r.message();
  r = mem.add_region(region(0, 0x2000, kTop - 0x10), memfd(0x2000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "userspace_addr")) << r.message();
  r = mem.add_region(region(0, 0x2000, 0x100000, kTop - 0x10), memfd(0x2000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "mmap_offset 0xffffffffffffffef + memory_size 0x2000 wraps")) << r.message();
  EXPECT_EQ(mem.num_regions(), 0u);
}

void too_many_regions() {
  GuestMemory mem;
  mem.set_max_regions(2);
  ASSERT_TRUE(mem.add_region(region(0x0000, 0x1000, 0x10000), memfd(0x1000)).ok());
  ASSERT_TRUE(mem.add_region(region(0x1000, 0x1000, 0x20000), memfd(0x1000)).ok());
  auto r = mem.add_region(region(0x2000, 0x1000, 0x30000), memfd(0x1000));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "2 regions")) << r.message();
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 3; ++i) fds.push_back(memfd(0x1000));
  const MemoryRegion three[] = {region(0, 0x1000, 0x10000), region(0x1000, 0x1000, 0x20000),
                                region(0x2000, 0x1000, 0x30000)};
  EXPECT_FALSE(mem.set_table(three, std::move(fds)).ok());
  EXPECT_EQ(mem.num_regions(), 2u);
}

void table_rejections() {
  GuestMemory mem;
  std::vector<UniqueFd> good;
  good.push_back(memfd(0x2000));
  good.push_back(memfd(0x2000));
  const MemoryRegion old_table[] = {region(0, 0x2000, 0x100000), region(0x100000, 0x2000, 0x200000)};
  ASSERT_TRUE(mem.set_table(old_table, std::move(good)).ok());
  *mem.gpa_to_host(0x10, 1).value() = 0x5a;

  // Second region reaches past its file: nothing changes.
  std::vector<UniqueFd> fds;
  fds.push_back(memfd(0x1000));
  fds.push_back(memfd(0x1000));
  const MemoryRegion bad[] = {region(0x800000, 0x1000, 0x900000), region(0xa00000, 0x1000, 0xb00000, 0x800)};
  auto r = mem.set_table(bad, std::move(fds));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "region 1: mmap_offset 0x800 + memory_size 0x1000 exceeds file size 0x1000"))
      << r.message();

  // Regions overlapping each other inside the new table.
  fds.clear();
  fds.push_back(memfd(0x1000));
  fds.push_back(memfd(0x1000));
  const MemoryRegion overlapping[] = {region(0x800000, 0x1000, 0x900000), region(0x800800, 0x1000, 0xb00000)};
  r = mem.set_table(overlapping, std::move(fds));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "region 1: guest_phys_addr 0x800800")) << r.message();

  // fd count must match.
  fds.clear();
  fds.push_back(memfd(0x1000));
  r = mem.set_table(overlapping, std::move(fds));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "2 regions but 1 fds")) << r.message();

  ASSERT_EQ(mem.num_regions(), 2u);
  const auto now = mem.regions();
  EXPECT_EQ(now[0].guest_phys_addr, 0u);
  EXPECT_EQ(now[1].guest_phys_addr, 0x100000u);
  auto p = mem.gpa_to_host(0x10, 1);
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ(**p, 0x5a);  // still the old mapping
}

void invalid_fd() {
  GuestMemory mem;
  auto r = mem.add_region(region(0, 0x1000, 0x10000), UniqueFd());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "no fd")) << r.message();
}

TEST(GuestMemory, RejectsZeroSize) { zero_size(); }
TEST(GuestMemory, RejectsOverlapGpa) { overlap_gpa(); }
TEST(GuestMemory, RejectsOverlapUva) { overlap_uva(); }
TEST(GuestMemory, RejectsMmapOffsetBeyondFile) { mmap_offset_beyond_file(); }
TEST(GuestMemory, RejectsWrapOfGpaUvaAndMmapOffset) { wraps(); }
TEST(GuestMemory, RejectsMoreThanMaxRegions) { too_many_regions(); }
TEST(GuestMemory, SetTableAllOrNothing) { table_rejections(); }
TEST(GuestMemory, RejectsMissingFd) { invalid_fd(); }

TEST(GuestMemory, NoFdLeakAcrossRejections) {
  const size_t before = open_fd_count();
  for (int round = 0; round < 3; ++round) {
    zero_size();
    overlap_gpa();
    overlap_uva();
    mmap_offset_beyond_file();
    wraps();
    too_many_regions();
    table_rejections();
    invalid_fd();
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST(GuestMemory, TranslatesGpaAndUvaDifferently) {
  GuestMemory mem;
  UniqueFd fd = memfd(0x4000);
  const int raw = fd.get();
  UniqueFd keep(dup(raw));
  ASSERT_TRUE(mem.add_region(region(0x100000, 0x2000, 0x7f0000200000, 0x1000), std::move(fd)).ok());

  auto g = mem.gpa_to_host(0x100010, 4);
  ASSERT_TRUE(g.ok()) << g.message();
  auto u = mem.uva_to_host(0x7f0000200010, 4);
  ASSERT_TRUE(u.ok()) << u.message();
  EXPECT_EQ(*g, *u);
  std::memcpy(*g, "ring", 4);
  char back[4];
  ASSERT_EQ(pread(keep.get(), back, 4, 0x1010), 4);  // mmap_offset 0x1000 + 0x10
  EXPECT_EQ(std::memcmp(back, "ring", 4), 0);

  auto gpa = mem.uva_to_gpa(0x7f0000201000);
  ASSERT_TRUE(gpa.ok()) << gpa.message();
  EXPECT_EQ(*gpa, 0x101000u);

  // Each address space only answers for its own addresses.
  EXPECT_FALSE(mem.gpa_to_host(0x7f0000200010, 4).ok());
  EXPECT_FALSE(mem.uva_to_host(0x100010, 4).ok());
  EXPECT_FALSE(mem.uva_to_gpa(0x100010).ok());
}

TEST(GuestMemory, MapsUnalignedMmapOffset) {
  GuestMemory mem;
  UniqueFd fd = memfd(0x3000);
  ASSERT_EQ(pwrite(fd.get(), "vq", 2, 0x1123), 2);
  ASSERT_TRUE(mem.add_region(region(0x40000, 0x1000, 0x90000, 0x1123), std::move(fd)).ok());
  auto p = mem.gpa_to_host(0x40000, 2);
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ(std::memcmp(*p, "vq", 2), 0);
  // The last byte of the region is usable; one more is not.
  EXPECT_TRUE(mem.gpa_to_host(0x40fff, 1).ok());
  EXPECT_FALSE(mem.gpa_to_host(0x40fff, 2).ok());
  (*mem.gpa_to_host(0x40fff, 1).value()) = 1;
}

TEST(GuestMemory, BoundsAtTheEndOfARegion) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x1000, 0x1000, 0x50000), memfd(0x1000)).ok());
  EXPECT_TRUE(mem.gpa_to_host(0x1000, 0x1000).ok());
  EXPECT_TRUE(mem.gpa_to_host(0x1fff, 0).ok());  // len 0 inside a region
  EXPECT_FALSE(mem.gpa_to_host(0x2000, 0).ok());  // len 0 one past the end
  EXPECT_FALSE(mem.gpa_to_host(0xfff, 1).ok());
  EXPECT_FALSE(mem.gpa_to_host(0x1800, kTop).ok());  // a length whose end would wrap
  EXPECT_FALSE(mem.uva_to_host(0x50800, kTop - 0x10).ok());
  auto r = mem.gpa_to_host(0x3000, 8);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "gpa 0x3000")) << r.message();
}

TEST(GuestMemory, AcceptsRegionEndingAtTopOfAddressSpace) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(kTop - 0xfff, 0x1000, kTop - 0xfff), memfd(0x1000)).ok());
  EXPECT_TRUE(mem.gpa_to_host(kTop, 1).ok());
  EXPECT_FALSE(mem.gpa_to_host(kTop, 2).ok());
  EXPECT_TRUE(mem.uva_to_host(kTop - 0xfff, 0x1000).ok());
  std::vector<HostSpan> spans;
  EXPECT_TRUE(mem.gpa_scatter(kTop - 0xf, 0x10, spans).ok());
  EXPECT_FALSE(mem.gpa_scatter(kTop - 0xf, 0x11, spans).ok());
  EXPECT_EQ(spans.size(), 1u);
}

TEST(GuestMemory, RejectsCrossRegion) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x0000, 0x1000, 0x10000), memfd(0x1000)).ok());
  ASSERT_TRUE(mem.add_region(region(0x1000, 0x1000, 0x11000), memfd(0x1000)).ok());
  auto r = mem.gpa_to_host(0xff0, 0x20);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "gpa 0xff0 len 0x20 crosses")) << r.message();
  auto u = mem.uva_to_host(0x10ff0, 0x20);
  ASSERT_FALSE(u.ok());
  EXPECT_TRUE(has(u.message(), "0x10ff0")) << u.message();
}

TEST(GuestMemory, ScatterAcrossAdjacentRegions) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x0000, 0x1000, 0x10000), memfd(0x1000)).ok());
  ASSERT_TRUE(mem.add_region(region(0x1000, 0x1000, 0x80000, 0x800), memfd(0x2000)).ok());
  std::vector<HostSpan> spans;
  ASSERT_TRUE(mem.gpa_scatter(0xff0, 0x20, spans).ok());
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].len, 0x10u);
  EXPECT_EQ(spans[1].len, 0x10u);
  EXPECT_EQ(spans[0].ptr, mem.gpa_to_host(0xff0, 0x10).value());
  EXPECT_EQ(spans[1].ptr, mem.gpa_to_host(0x1000, 0x10).value());
  spans[1].ptr[0] = 0x77;
  EXPECT_EQ(*mem.uva_to_host(0x80000, 1).value(), 0x77);

  // Within one region it is a single span; spans are appended.
  ASSERT_TRUE(mem.gpa_scatter(0x10, 0x10, spans).ok());
  EXPECT_EQ(spans.size(), 3u);
  ASSERT_TRUE(mem.gpa_scatter(0x0, 0x2000, spans).ok());
  EXPECT_EQ(spans.size(), 5u);
}

TEST(GuestMemory, ScatterRejectsGap) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0x0000, 0x1000, 0x10000), memfd(0x1000)).ok());
  ASSERT_TRUE(mem.add_region(region(0x2000, 0x1000, 0x11000), memfd(0x1000)).ok());
  std::vector<HostSpan> spans{HostSpan{nullptr, 1}};
  auto r = mem.gpa_scatter(0xff0, 0x1020, spans);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "no memory region at gpa 0x1000")) << r.message();
  EXPECT_EQ(spans.size(), 1u);  // nothing appended on failure
  EXPECT_FALSE(mem.gpa_scatter(0x3000, 1, spans).ok());
  EXPECT_FALSE(mem.gpa_scatter(0x800, kTop, spans).ok());
  EXPECT_EQ(spans.size(), 1u);
}

TEST(GuestMemory, AddRemoveRegion) {
  GuestMemory mem;
  const MemoryRegion a = region(0x0000, 0x1000, 0x10000, 0);
  const MemoryRegion b = region(0x4000, 0x2000, 0x20000, 0x1000);
  ASSERT_TRUE(mem.add_region(a, memfd(0x1000)).ok());
  ASSERT_TRUE(mem.add_region(b, memfd(0x3000)).ok());
  EXPECT_EQ(mem.num_regions(), 2u);

  // The size must match too.
  MemoryRegion wrong_size = b;
  wrong_size.memory_size = 0x1000;
  auto r = mem.remove_region(wrong_size);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.message(), "guest_phys_addr 0x4000 memory_size 0x1000")) << r.message();
  MemoryRegion wrong_uva = b;
  wrong_uva.userspace_addr = 0x30000;
  EXPECT_FALSE(mem.remove_region(wrong_uva).ok());

  // REM_MEM_REG ignores the mmap offset.
  MemoryRegion other_offset = b;
  other_offset.mmap_offset = 0;
  ASSERT_TRUE(mem.remove_region(other_offset).ok());
  EXPECT_EQ(mem.num_regions(), 1u);
  EXPECT_FALSE(mem.gpa_to_host(0x4000, 1).ok());
  EXPECT_TRUE(mem.gpa_to_host(0x0, 1).ok());

  // The freed range can be reused.
  EXPECT_TRUE(mem.add_region(region(0x4000, 0x1000, 0x20000), memfd(0x1000)).ok());
  mem.clear();
  EXPECT_EQ(mem.num_regions(), 0u);
}

TEST(GuestMemory, SetTableReplacesTheTable) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(region(0, 0x1000, 0x10000), memfd(0x1000)).ok());
  std::vector<UniqueFd> fds;
  fds.push_back(memfd(0x2000));
  const MemoryRegion next[] = {region(0x100000, 0x2000, 0x500000)};
  ASSERT_TRUE(mem.set_table(next, std::move(fds)).ok());
  ASSERT_EQ(mem.num_regions(), 1u);
  EXPECT_FALSE(mem.gpa_to_host(0, 1).ok());
  EXPECT_TRUE(mem.gpa_to_host(0x101fff, 1).ok());
  // An empty table clears it.
  ASSERT_TRUE(mem.set_table({}, {}).ok());
  EXPECT_EQ(mem.num_regions(), 0u);
}

TEST(GuestMemory, MoveKeepsMappings) {
  GuestMemory a;
  ASSERT_TRUE(a.add_region(region(0, 0x1000, 0x10000), memfd(0x1000)).ok());
  uint8_t* p = a.gpa_to_host(0x10, 1).value();
  *p = 9;
  GuestMemory b(std::move(a));
  EXPECT_EQ(b.gpa_to_host(0x10, 1).value(), p);
  GuestMemory c;
  c = std::move(b);
  EXPECT_EQ(*c.gpa_to_host(0x10, 1).value(), 9);
}

}  // namespace
}  // namespace vhu
