// Shared by robustness.* and interop.*: proving a back-end came through bad
// input intact. Guest RAM is snapshotted and diffed against the ranges the
// back-end may legitimately write, so a stray write anywhere (past a buffer,
// into a device-readable buffer, into unused memory) is caught, not only next
// to the buffer a case happens to watch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace conform {

struct GuestRange {
  uint64_t gpa;
  uint64_t len;
};

// Fills every byte of guest RAM with a canary pattern. Call before the guest
// lays out its rings (QemuFrontend::realize), which zero only what they use.
void fill_canary(GuestRam& ram);

class RamSnapshot {
 public:
  explicit RamSnapshot(const GuestRam& ram);
  // Ranges that differ from the snapshot and lie outside `allowed`, as text
  // ("gpa 0x1040..0x106c (44 bytes)"); at most a few, merged.
  std::vector<std::string> stray_writes(const GuestRam& ram, const std::vector<GuestRange>& allowed) const;

 private:
  std::vector<std::vector<uint8_t>> copy_;
};

// What a back-end may write in a vsock guest: both used rings, and every
// device-writable descriptor currently in the rx descriptor table.
std::vector<GuestRange> vsock_writable(VsockGuest& g);

// Fails the case when `snap` shows writes outside `allowed`.
void expect_no_stray_writes(Ctx& ctx, const RamSnapshot& snap, const std::vector<GuestRange>& allowed,
                            const std::string& after);

// The back-end survived `what`: not crashed, and either it closed the
// connection or it still answers on it. Returns true when it closed.
bool expect_survived(Ctx& ctx, const std::string& what);

// A ring index the back-end does not have, for requests meant to be refused:
// 255 unless MQ is negotiated, else past what GET_QUEUE_NUM declares (the case
// is skipped when that leaves no 8-bit index).
uint8_t ring_index_past_device(Ctx& ctx);

// A new front-end connection, or the case skipped when the back-end takes no
// more (it did not crash): accepting another front-end is optional.
Frontend& fresh_connection_or_skip(Ctx& ctx, const std::string& after);

// A new front-end connection (else the case is skipped, as above) gets a full QEMU start and moves tx buffers:
// whatever happened on the old connection left the back-end serving.
void expect_fresh_connection_works(Ctx& ctx, const std::string& after);

}  // namespace conform
