#include "guest_ram.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

namespace conform {

std::vector<RegionLayout> GuestRam::default_layout() {
  return {
      {0x0, 2 << 20, 0x7f5a00400000ull, 0},
      {0x100000000ull, 2 << 20, 0x7f5a00000000ull, 1 << 20},
  };
}

GuestRam::GuestRam(std::vector<RegionLayout> layout) {
  for (size_t i = 0; i < layout.size(); ++i) {
    Region r;
    r.layout = layout[i];
    int fd = memfd_create(fmt::format("conform-guest-ram{}", i).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) throw std::runtime_error(fmt::format("memfd_create: {}", std::strerror(errno)));
    r.memfd.reset(fd);
    r.map_len = r.layout.mmap_offset + r.layout.size;
    if (ftruncate(fd, static_cast<off_t>(r.map_len)) != 0)
      throw std::runtime_error(fmt::format("ftruncate: {}", std::strerror(errno)));
    // Populated at once: the cases that hash, snapshot or fill guest RAM touch
    // every page, and on these VMs a fault per page costs more than one mmap
    // that fills all 5 MiB.
    void* p = mmap(nullptr, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error(fmt::format("mmap: {}", std::strerror(errno)));
    r.map = static_cast<uint8_t*>(p);
    // A back-end that ignores mmap_offset reads this instead of the rings.
    std::memset(r.map, 0xa5, r.layout.mmap_offset);
    regions_.push_back(std::move(r));
  }
}

GuestRam::~GuestRam() {
  for (auto& r : regions_)
    if (r.map) munmap(r.map, r.map_len);
}

vhu::MemoryRegion GuestRam::region(size_t i) const {
  const auto& l = regions_.at(i).layout;
  return {l.gpa, l.size, l.uaddr, l.mmap_offset};
}

std::vector<vhu::MemoryRegion> GuestRam::regions() const {
  std::vector<vhu::MemoryRegion> out;
  for (size_t i = 0; i < regions_.size(); ++i) out.push_back(region(i));
  return out;
}

vhu::UniqueFd GuestRam::dup_fd(size_t i) const {
  int fd = fcntl(regions_.at(i).memfd.get(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw std::runtime_error(fmt::format("dup: {}", std::strerror(errno)));
  return vhu::UniqueFd(fd);
}

std::vector<vhu::UniqueFd> GuestRam::dup_fds() const {
  std::vector<vhu::UniqueFd> out;
  for (size_t i = 0; i < regions_.size(); ++i) out.push_back(dup_fd(i));
  return out;
}

uint64_t GuestRam::file_size(size_t i) const { return regions_.at(i).map_len; }

uint8_t* GuestRam::host(uint64_t gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    const auto& l = r.layout;
    if (gpa >= l.gpa && gpa - l.gpa < l.size && len <= l.size - (gpa - l.gpa)) return r.base() + (gpa - l.gpa);
  }
  throw std::runtime_error(fmt::format("suite bug: guest range {:#x}+{:#x} is outside guest RAM", gpa, len));
}

uint64_t GuestRam::gpa_to_uva(uint64_t gpa) const {
  for (const auto& r : regions_) {
    const auto& l = r.layout;
    if (gpa >= l.gpa && gpa - l.gpa < l.size) return l.uaddr + (gpa - l.gpa);
  }
  throw std::runtime_error(fmt::format("suite bug: gpa {:#x} is outside guest RAM", gpa));
}

uint64_t GuestRam::alloc(uint64_t size, uint64_t align, int region) {
  for (size_t i = 0; i < regions_.size(); ++i) {
    if (region >= 0 && static_cast<size_t>(region) != i) continue;
    auto& r = regions_[i];
    uint64_t off = (r.next_free + align - 1) / align * align;
    if (off + size <= r.layout.size) {
      r.next_free = off + size;
      return r.layout.gpa + off;
    }
  }
  throw std::runtime_error(fmt::format("suite bug: guest RAM exhausted allocating {:#x} bytes", size));
}

uint64_t GuestRam::hash() const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& r : regions_) {
    // Word-wise FNV variant: a full byte-wise pass over 4 MiB is needlessly slow.
    const uint8_t* p = r.base();
    for (uint64_t i = 0; i + 8 <= r.layout.size; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
    }
  }
  return h;
}

}  // namespace conform
