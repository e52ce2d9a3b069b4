// The dirty-page log of live migration (vhost-user "Migration"): one bit per
// 4 KiB page of guest-physical address space, in memory the front-end shares
// with SET_LOG_BASE. A back-end maps the front-end's fd (map()); a front-end,
// or a test playing one, makes a log (create()) and reads it back.
#pragma once

#include <cstdint>

#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace vhu {

class DirtyLog {
 public:
  static constexpr uint64_t kPageSize = 0x1000;  // VHOST_LOG_PAGE

  DirtyLog() = default;
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;
  DirtyLog(DirtyLog&& o) noexcept;
  DirtyLog& operator=(DirtyLog&& o) noexcept;
  ~DirtyLog();

  // Maps [offset, offset + size) of `fd` (shared, read-write). Rejects size 0,
  // a range that wraps, and one past the end of the file: touching a shared
  // mapping beyond its file raises SIGBUS, which a front-end must not be able
  // to cause.
  static Result<DirtyLog> map(const UniqueFd& fd, uint64_t size, uint64_t offset);
  // A zeroed log of `size` bytes at `offset` in a fresh memfd, which fd()
  // hands out (with offset() for SET_LOG_BASE's mmap_offset).
  static Result<DirtyLog> create(uint64_t size, uint64_t offset = 0);
  // Bytes a log needs to cover guest-physical addresses below `end`, in
  // whole u64 words as QEMU allocates it.
  static uint64_t bytes_for(uint64_t end);

  bool valid() const { return bits_ != nullptr; }
  uint64_t size() const { return size_; }
  // Where the log starts in its file.
  uint64_t offset() const { return offset_; }
  // The guest-physical addresses the log covers: [0, covered()), saturating.
  uint64_t covered() const {
    return size_ > ~0ull / (8 * kPageSize) ? ~0ull : size_ * 8 * kPageSize;
  }
  const UniqueFd& fd() const { return fd_; }

  // Marks every page [addr, addr + len) touches, atomically (the spec: the
  // log "may be concurrently manipulated"). False when part of the range lies
  // beyond the log; the pages inside are marked all the same.
  bool mark(uint64_t addr, uint64_t len) const;
  // Whether the page holding `addr` is marked (false beyond the log).
  bool marked(uint64_t addr) const;
  void clear();

 private:
  void* map_ = nullptr;
  size_t map_len_ = 0;
  uint8_t* bits_ = nullptr;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
  UniqueFd fd_;
};

}  // namespace vhu
