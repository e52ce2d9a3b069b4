// Guest RAM as the back-end sees it: regions mapped from the front-end's fds,
// and translation of guest-physical and front-end-virtual ranges to host
// pointers. Every bound is checked without overflow.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "vhu/messages.h"
#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vhu {

// A host-side view of part of guest memory.
struct HostSpan {
  uint8_t* ptr;
  uint64_t len;
};

class GuestMemory {
 public:
  GuestMemory();  // out of line: Region is incomplete here
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  GuestMemory(GuestMemory&&) noexcept;
  GuestMemory& operator=(GuestMemory&&) noexcept;
  ~GuestMemory();

  // Maps [mmap_offset, mmap_offset + memory_size) of fd (shared, read-write).
  // Rejects: zero size, gpa or uaddr ranges that wrap around 2^64,
  // mmap_offset + size beyond the file (fstat), overlap in gpa or uaddr with
  // an existing region, more than max_regions() regions.
  Result<void> add_region(const MemoryRegion& desc, UniqueFd fd);
  // Removes the region whose gpa, size and uaddr all match (REM_MEM_REG).
  Result<void> remove_region(const MemoryRegion& desc);
  // Replaces the whole table atomically: either every region maps or none
  // changes (SET_MEM_TABLE). fds.size() must equal regions.size().
  Result<void> set_table(std::span<const MemoryRegion> regions, std::vector<UniqueFd> fds);
  void clear();

  size_t num_regions() const { return regions_.size(); }
  void set_max_regions(size_t n) { max_regions_ = n; }
  size_t max_regions() const { return max_regions_; }
  std::vector<MemoryRegion> regions() const;

  // [gpa, gpa+len) inside one region -> host pointer. len 0 is allowed when
  // gpa lies inside a region. Crossing a region boundary is an error.
  Result<uint8_t*> gpa_to_host(uint64_t gpa, uint64_t len) const;
  // The same for front-end virtual addresses (SET_VRING_ADDR).
  Result<uint8_t*> uva_to_host(uint64_t uva, uint64_t len) const;
  Result<uint64_t> uva_to_gpa(uint64_t uva) const;
  // [gpa, gpa+len) possibly spanning adjacent regions -> appended host spans.
  Result<void> gpa_scatter(uint64_t gpa, uint64_t len, std::vector<HostSpan>& out) const;

 private:
  struct Region;
  const Region* find_gpa(uint64_t gpa) const;
  const Region* find_uva(uint64_t uva) const;
  std::vector<std::unique_ptr<Region>> regions_;
  size_t max_regions_ = 32;
};

}  // namespace vhu
