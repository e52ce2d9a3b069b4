// Scatter lists over a descriptor chain, so payload moves between guest
// memory and a host socket in one readv/writev with no bounce buffer.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "vhu/guest_memory.h"
#include "vhu/result.h"
#include "vhu/virtqueue.h"

namespace vsockref {

// Appends host iovecs for [offset, offset+len) of the chain's readable
// (writable == false) or writable part. Fewer bytes when the part is shorter.
vhu::Result<uint64_t> chain_iovecs(const vhu::GuestMemory& mem, const vhu::Chain& c, bool writable, uint64_t offset,
                                   uint64_t len, std::vector<iovec>& out);

}  // namespace vsockref
