#include "vhu/dirty_log.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

namespace vhu {

DirtyLog::DirtyLog(DirtyLog&& o) noexcept
    : map_(std::exchange(o.map_, nullptr)), map_len_(std::exchange(o.map_len_, 0)),
      bits_(std::exchange(o.bits_, nullptr)), size_(std::exchange(o.size_, 0)),
      offset_(std::exchange(o.offset_, 0)), fd_(std::move(o.fd_)) {}

DirtyLog& DirtyLog::operator=(DirtyLog&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_len_);
    map_ = std::exchange(o.map_, nullptr);
    map_len_ = std::exchange(o.map_len_, 0);
    bits_ = std::exchange(o.bits_, nullptr);
    size_ = std::exchange(o.size_, 0);
    offset_ = std::exchange(o.offset_, 0);
    fd_ = std::move(o.fd_);
  }
  return *this;
}

DirtyLog::~DirtyLog() {
  if (map_) ::munmap(map_, map_len_);
  map_ = nullptr;
  bits_ = nullptr;
}

Result<DirtyLog> DirtyLog::map(const UniqueFd& fd, uint64_t size, uint64_t offset) {
  if (size == 0) return Err("log: mmap_size is 0");
  if (offset > std::numeric_limits<uint64_t>::max() - size)
    return Err(fmt::format("log: mmap_offset {:#x} + mmap_size {:#x} wraps around", offset, size));
  if (!fd.valid()) return Err("log: no fd");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return Err(fmt::format("log: fstat of fd {}: {}", fd.get(), std::strerror(errno)), ErrorKind::Io);
  const uint64_t file_size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (offset + size > file_size)
    return Err(fmt::format("log: mmap_offset {:#x} + mmap_size {:#x} exceeds the file's {:#x} bytes", offset, size,
                           file_size));
  // mmap wants a page-aligned file offset; the sums stay under file_size.
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t lead = offset % page;
  const uint64_t len = lead + size;
  if (len > std::numeric_limits<size_t>::max())
    return Err(fmt::format("log: mmap_size {:#x} does not fit in the address space", size));
  void* m = ::mmap(nullptr, static_cast<size_t>(len), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(),
                   static_cast<off_t>(offset - lead));
  if (m == MAP_FAILED)
    return Err(fmt::format("log: mmap of {:#x} bytes: {}", len, std::strerror(errno)), ErrorKind::Io);
  DirtyLog log;
  log.map_ = m;
  log.map_len_ = static_cast<size_t>(len);
  log.bits_ = static_cast<uint8_t*>(m) + lead;
  log.size_ = size;
  log.offset_ = offset;
  return log;
}

Result<DirtyLog> DirtyLog::create(uint64_t size, uint64_t offset) {
  UniqueFd fd(::memfd_create("vhu-dirty-log", MFD_CLOEXEC));
  if (!fd) return Err(fmt::format("log: memfd_create: {}", std::strerror(errno)), ErrorKind::Io);
  const auto max = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
  if (size > max || offset > max - size)
    return Err(fmt::format("log: offset {:#x} + size {:#x} exceeds a file's largest size", offset, size));
  if (::ftruncate(fd.get(), static_cast<off_t>(offset + size)) != 0)
    return Err(fmt::format("log: ftruncate to {:#x} bytes: {}", offset + size, std::strerror(errno)), ErrorKind::Io);
  auto log = map(fd, size, offset);
  if (!log) return log.error();
  log->fd_ = std::move(fd);
  return log;
}

uint64_t DirtyLog::bytes_for(uint64_t end) {
  const uint64_t pages = end / kPageSize + (end % kPageSize != 0);
  const uint64_t words = pages / 64 + (pages % 64 != 0);
  return words * 8;
}

bool DirtyLog::mark(uint64_t addr, uint64_t len) const {
  if (len == 0 || !bits_) return true;
  const uint64_t first = addr / kPageSize;
  // The last byte, without overflow for a range that ends at 2^64.
  const uint64_t last = (addr + (len - 1) < addr ? std::numeric_limits<uint64_t>::max() : addr + (len - 1)) / kPageSize;
  const uint64_t pages = size_ * 8;
  bool inside = true;
  for (uint64_t p = first; p <= last; ++p) {
    if (p >= pages) {
      inside = false;
      break;
    }
    std::atomic_ref<uint8_t>(bits_[p / 8]).fetch_or(static_cast<uint8_t>(1u << (p % 8)), std::memory_order_relaxed);
  }
  return inside;
}

bool DirtyLog::marked(uint64_t addr) const {
  const uint64_t p = addr / kPageSize;
  if (!bits_ || p >= size_ * 8) return false;
  return (std::atomic_ref<uint8_t>(bits_[p / 8]).load(std::memory_order_relaxed) >> (p % 8)) & 1;
}

void DirtyLog::clear() {
  for (uint64_t i = 0; i < size_; ++i) std::atomic_ref<uint8_t>(bits_[i]).store(0, std::memory_order_relaxed);
}

}  // namespace vhu
