// A fixed-capacity FIFO of bytes. Its free space and its contents are each at
// most two contiguous pieces, so a socket can be read straight into it (one
// readv) and guest buffers filled straight from it, without moving bytes to
// keep it compact. The storage is allocated, uninitialised, on first use and
// kept: a flow that reads ahead once per credit window would otherwise pay
// for a fresh mapping and its page faults every window.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace vsockref {

class ByteRing {
 public:
  explicit ByteRing(size_t capacity = 0) : cap_(capacity) {}

  size_t capacity() const { return cap_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t space() const { return cap_ - size_; }
  bool allocated() const { return data_ != nullptr; }

  // Up to `max` bytes of free space, in order, as at most two iovecs;
  // returns how many it filled. Bytes written there count once commit()ed.
  int free_iov(size_t max, iovec out[2]) {
    if (!data_ && cap_) data_ = std::make_unique_for_overwrite<uint8_t[]>(cap_);
    const size_t tail = (head_ + size_) % (cap_ ? cap_ : 1);
    return pieces(tail, std::min(max, space()), out);
  }
  void commit(size_t n) { size_ += std::min(n, space()); }

  // Up to `max` bytes of the contents, oldest first, as at most two iovecs.
  int data_iov(size_t max, iovec out[2]) const { return pieces(head_, std::min(max, size_), out); }
  void consume(size_t n) {
    n = std::min(n, size_);
    head_ = (head_ + n) % cap_;
    size_ -= n;
    if (size_ == 0) head_ = 0;  // the next read gets one piece, not two
  }

 private:
  int pieces(size_t at, size_t n, iovec out[2]) const {
    if (n == 0) return 0;
    const size_t first = std::min(n, cap_ - at);
    out[0] = {data_.get() + at, first};
    if (first == n) return 1;
    out[1] = {data_.get(), n - first};
    return 2;
  }

  size_t cap_;
  std::unique_ptr<uint8_t[]> data_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace vsockref
