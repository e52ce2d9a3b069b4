#include "vhu/guest_memory.h"

#include <fmt/format.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace vhu {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Ranges are compared by their last byte so that one ending exactly at 2^64
// is representable; `size` is non-zero wherever these are used.
bool wraps(uint64_t base, uint64_t size) { return size - 1 > kU64Max - base; }
uint64_t last(uint64_t base, uint64_t size) { return base + (size - 1); }
bool overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a <= last(b, b_size) && b <= last(a, a_size);
}
bool contains(uint64_t base, uint64_t size, uint64_t addr) { return addr >= base && addr - base < size; }

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

std::string region_text(const MemoryRegion& r) {
  return fmt::format("guest_phys_addr {} memory_size {} userspace_addr {}", hex(r.guest_phys_addr),
                     hex(r.memory_size), hex(r.userspace_addr));
}

// mmap wants a page-aligned file offset and the spec allows any mmap_offset,
// so the mapping starts at the boundary below it. hugetlbfs needs its own
// (huge) page size for both offset and length, as libvhost-user learned.
uint64_t mapping_alignment(int fd) {
  uint64_t align = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  struct statfs fs {};
  if (::fstatfs(fd, &fs) == 0 && static_cast<uint64_t>(fs.f_type) == HUGETLBFS_MAGIC && fs.f_bsize > 0)
    align = std::max(align, static_cast<uint64_t>(fs.f_bsize));
  return align;
}

}  // namespace

struct GuestMemory::Region {
  MemoryRegion desc{};
  void* map = MAP_FAILED;
  size_t map_len = 0;
  uint8_t* host = nullptr;  // the byte at file offset desc.mmap_offset

  Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region() {
    if (map != MAP_FAILED) ::munmap(map, map_len);
  }
};

GuestMemory::GuestMemory() = default;
GuestMemory::GuestMemory(GuestMemory&&) noexcept = default;
GuestMemory& GuestMemory::operator=(GuestMemory&&) noexcept = default;
GuestMemory::~GuestMemory() = default;

Result<void> GuestMemory::add_region(const MemoryRegion& d, UniqueFd fd) {
  // Named by the slot it would take, which is its index in a SET_MEM_TABLE.
  const std::string who = fmt::format("region {}", regions_.size());
  if (regions_.size() >= max_regions_)
    return Err(fmt::format("{}: table already holds {} regions, the maximum", who, max_regions_));
  if (d.memory_size == 0) return Err(fmt::format("{}: memory_size is 0 ({})", who, region_text(d)));
  if (wraps(d.guest_phys_addr, d.memory_size))
    return Err(fmt::format("{}: guest_phys_addr {} + memory_size {} wraps around 2^64", who,
                           hex(d.guest_phys_addr), hex(d.memory_size)));
  if (wraps(d.userspace_addr, d.memory_size))
    return Err(fmt::format("{}: userspace_addr {} + memory_size {} wraps around 2^64", who,
                           hex(d.userspace_addr), hex(d.memory_size)));
  if (d.memory_size > kU64Max - d.mmap_offset)
    return Err(fmt::format("{}: mmap_offset {} + memory_size {} wraps around 2^64", who, hex(d.mmap_offset),
                           hex(d.memory_size)));
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemoryRegion& o = regions_[i]->desc;
    if (overlaps(d.guest_phys_addr, d.memory_size, o.guest_phys_addr, o.memory_size))
      return Err(fmt::format("{}: guest_phys_addr {} memory_size {} overlaps region {} ({})", who,
                             hex(d.guest_phys_addr), hex(d.memory_size), i, region_text(o)));
    if (overlaps(d.userspace_addr, d.memory_size, o.userspace_addr, o.memory_size))
      return Err(fmt::format("{}: userspace_addr {} memory_size {} overlaps region {} ({})", who,
                             hex(d.userspace_addr), hex(d.memory_size), i, region_text(o)));
  }
  if (!fd.valid()) return Err(fmt::format("{}: no fd ({})", who, region_text(d)));

  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return Err(fmt::format("{}: fstat of fd {}: {}", who, fd.get(), std::strerror(errno)), ErrorKind::Io);
  // Touching a shared mapping past the end of its file raises SIGBUS, which
  // a back-end must not let the front-end trigger.
  const uint64_t file_size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (d.mmap_offset + d.memory_size > file_size)
    return Err(fmt::format("{}: mmap_offset {} + memory_size {} exceeds file size {}", who, hex(d.mmap_offset),
                           hex(d.memory_size), hex(file_size)));

  // The sums below stay under file_size <= INT64_MAX, so none can overflow.
  const uint64_t align = mapping_alignment(fd.get());
  const uint64_t map_offset = d.mmap_offset - d.mmap_offset % align;
  const uint64_t lead = d.mmap_offset - map_offset;
  uint64_t map_len = lead + d.memory_size;
  map_len += (align - map_len % align) % align;
  if (map_len > std::numeric_limits<size_t>::max())
    return Err(fmt::format("{}: memory_size {} does not fit in the address space", who, hex(d.memory_size)));

  auto r = std::make_unique<Region>();
  r->desc = d;
  r->map = ::mmap(nullptr, static_cast<size_t>(map_len), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                  fd.get(), static_cast<off_t>(map_offset));
  if (r->map == MAP_FAILED)
    return Err(fmt::format("{}: mmap of {} bytes at file offset {}: {}", who, hex(map_len), hex(map_offset),
                           std::strerror(errno)),
               ErrorKind::Io);
  r->map_len = static_cast<size_t>(map_len);
  r->host = static_cast<uint8_t*>(r->map) + lead;
  // The mapping keeps the memory alive; holding the fd too would only cost
  // one descriptor per region.
  fd.reset();
  regions_.push_back(std::move(r));
  return Ok();
}

Result<void> GuestMemory::remove_region(const MemoryRegion& d) {
  // REM_MEM_REG identifies the region by guest address, user address and
  // size; the spec says the mmap offset is ignored.
  auto it = std::find_if(regions_.begin(), regions_.end(), [&](const std::unique_ptr<Region>& r) {
    return r->desc.guest_phys_addr == d.guest_phys_addr && r->desc.memory_size == d.memory_size &&
           r->desc.userspace_addr == d.userspace_addr;
  });
  if (it == regions_.end()) return Err(fmt::format("no region matches {}", region_text(d)));
  regions_.erase(it);
  return Ok();
}

Result<void> GuestMemory::set_table(std::span<const MemoryRegion> regions, std::vector<UniqueFd> fds) {
  if (fds.size() != regions.size())
    return Err(fmt::format("memory table has {} regions but {} fds", regions.size(), fds.size()));
  if (regions.size() > max_regions_)
    return Err(fmt::format("memory table has {} regions, the maximum is {}", regions.size(), max_regions_));
  // Built aside and swapped in, so a bad region leaves the old table whole.
  GuestMemory fresh;
  fresh.max_regions_ = max_regions_;
  for (size_t i = 0; i < regions.size(); ++i) VHU_TRY(fresh.add_region(regions[i], std::move(fds[i])));
  regions_.swap(fresh.regions_);
  return Ok();
}

void GuestMemory::clear() { regions_.clear(); }

std::vector<MemoryRegion> GuestMemory::regions() const {
  std::vector<MemoryRegion> out;
  out.reserve(regions_.size());
  for (const auto& r : regions_) out.push_back(r->desc);
  return out;
}

const GuestMemory::Region* GuestMemory::find_gpa(uint64_t gpa) const {
  for (const auto& r : regions_)
    if (contains(r->desc.guest_phys_addr, r->desc.memory_size, gpa)) return r.get();
  return nullptr;
}

const GuestMemory::Region* GuestMemory::find_uva(uint64_t uva) const {
  for (const auto& r : regions_)
    if (contains(r->desc.userspace_addr, r->desc.memory_size, uva)) return r.get();
  return nullptr;
}

Result<uint8_t*> GuestMemory::gpa_to_host(uint64_t gpa, uint64_t len) const {
  const Region* r = find_gpa(gpa);
  if (!r) return Err(fmt::format("gpa {} (len {}) is in no memory region", hex(gpa), hex(len)));
  const uint64_t off = gpa - r->desc.guest_phys_addr;
  if (len > r->desc.memory_size - off)
    return Err(fmt::format("gpa {} len {} crosses the end of the region at guest_phys_addr {} memory_size {}",
                           hex(gpa), hex(len), hex(r->desc.guest_phys_addr), hex(r->desc.memory_size)));
  return r->host + off;
}

Result<uint8_t*> GuestMemory::uva_to_host(uint64_t uva, uint64_t len) const {
  const Region* r = find_uva(uva);
  if (!r) return Err(fmt::format("userspace address {} (len {}) is in no memory region", hex(uva), hex(len)));
  const uint64_t off = uva - r->desc.userspace_addr;
  if (len > r->desc.memory_size - off)
    return Err(fmt::format(
        "userspace address {} len {} crosses the end of the region at userspace_addr {} memory_size {}", hex(uva),
        hex(len), hex(r->desc.userspace_addr), hex(r->desc.memory_size)));
  return r->host + off;
}

Result<uint64_t> GuestMemory::uva_to_gpa(uint64_t uva) const {
  const Region* r = find_uva(uva);
  if (!r) return Err(fmt::format("userspace address {} is in no memory region", hex(uva)));
  return r->desc.guest_phys_addr + (uva - r->desc.userspace_addr);
}

Result<void> GuestMemory::gpa_scatter(uint64_t gpa, uint64_t len, std::vector<HostSpan>& out) const {
  if (len == 0) {
    if (!find_gpa(gpa)) return Err(fmt::format("gpa {} (len 0) is in no memory region", hex(gpa)));
    return Ok();
  }
  if (wraps(gpa, len)) return Err(fmt::format("gpa {} + len {} wraps around 2^64", hex(gpa), hex(len)));
  const size_t first = out.size();
  uint64_t cur = gpa;
  uint64_t left = len;
  while (left > 0) {
    const Region* r = find_gpa(cur);
    if (!r) {
      out.resize(first);  // callers see all of the range or none of it
      return Err(fmt::format("gpa {} len {}: no memory region at gpa {}", hex(gpa), hex(len), hex(cur)));
    }
    const uint64_t off = cur - r->desc.guest_phys_addr;
    const uint64_t take = std::min(left, r->desc.memory_size - off);
    out.push_back(HostSpan{r->host + off, take});
    left -= take;
    cur += take;  // reaches 2^64 (wraps to 0) only together with left == 0
  }
  return Ok();
}

}  // namespace vhu
