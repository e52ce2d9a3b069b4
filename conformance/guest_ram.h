// Guest RAM as the runner's emulated guest owns it: memfd regions whose
// guest-physical address, front-end virtual address (userspace_addr) and the
// runner's own mapping all differ, so a back-end that mixes them up touches
// the wrong bytes and fails.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vhu/messages.h"
#include "vhu/unique_fd.h"

namespace conform {

struct RegionLayout {
  uint64_t gpa;
  uint64_t size;
  uint64_t uaddr;        // what the front-end claims as its virtual address
  uint64_t mmap_offset;  // where the region starts in its memfd
};

class GuestRam {
 public:
  // Two 2 MiB regions: gpa 0 and 4 GiB; uaddrs in the opposite order and
  // unrelated to either gpa; the second region starts 1 MiB into its memfd,
  // whose first MiB is filled with a pattern.
  static std::vector<RegionLayout> default_layout();

  explicit GuestRam(std::vector<RegionLayout> layout = default_layout());
  ~GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  size_t num_regions() const { return regions_.size(); }
  vhu::MemoryRegion region(size_t i) const;
  std::vector<vhu::MemoryRegion> regions() const;
  // A fresh dup of each region's memfd, for one message.
  vhu::UniqueFd dup_fd(size_t i) const;
  std::vector<vhu::UniqueFd> dup_fds() const;
  uint64_t file_size(size_t i) const;
  // A front-end that re-maps its RAM elsewhere: same memory, new userspace_addr.
  void set_uaddr(size_t i, uint64_t uaddr) { regions_.at(i).layout.uaddr = uaddr; }

  // The runner's pointer to guest-physical [gpa, gpa+len); throws on a bad range.
  uint8_t* host(uint64_t gpa, uint64_t len = 1) const;
  uint64_t gpa_to_uva(uint64_t gpa) const;
  // Bump allocation inside region `region` (-1: the first with room). Returns a gpa.
  uint64_t alloc(uint64_t size, uint64_t align = 64, int region = -1);
  // FNV-1a over every region: "no guest byte changed" checks.
  uint64_t hash() const;

 private:
  struct Region {
    RegionLayout layout;
    vhu::UniqueFd memfd;
    uint8_t* map = nullptr;   // mapping of the whole file
    uint64_t map_len = 0;
    uint64_t next_free = 0;   // bump allocator, offset inside the region
    uint8_t* base() const { return map + layout.mmap_offset; }
  };
  std::vector<Region> regions_;
};

}  // namespace conform
