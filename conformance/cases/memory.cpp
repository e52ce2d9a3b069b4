// Memory tables: SET_MEM_TABLE, ADD/REM_MEM_REG and malformed regions.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include "common.h"

namespace conform {
namespace {

using vhu::FrontendReq;
using vhu::Message;
namespace pf = vhu::protocol_feature;

vhu::UniqueFd small_memfd(uint64_t size) {
  int fd = memfd_create("conform-small", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) fail("a memfd", "memfd_create failed");
  return vhu::UniqueFd(fd);
}

// Proves both regions work: the tx ring and its buffers live in region 0, the
// rx ring and its buffers in region 1, whose memfd mapping starts at a
// non-zero mmap_offset. A host CONNECT must come out as a REQUEST on rx.
void prove_datapath(Ctx& ctx, QemuFrontend& q, const std::string& what, uint32_t port) {
  auto& g = q.guest();
  tx_consume(ctx, g, 3, what);
  auto host = ctx.host().connect(port);
  auto p = wait_op(ctx, g, vhu::vsock::Op::REQUEST, port);
  check(p.has_value(), fmt::format("a REQUEST on rx (region 1) for the host's CONNECT {} {}", port, what), "nothing");
}

CONFORM_CASE(set_mem_table,
             .id = "memory.set_mem_table",
             .requirements = {"VU-MEM-TABLE", "VU-MEM-ADDR-MAPPING", "VU-RING-ADDR-UVA"},
             .summary = "two regions whose gpa, uaddr and runner mapping all differ: rings and buffers are found",
             .device = "vsock") {
  QemuFrontend q = started(ctx, without_mem_slots());
  prove_datapath(ctx, q, "through a two-region SET_MEM_TABLE", 5100);
}

CONFORM_CASE(replace_table,
             .id = "memory.replace_table",
             .requirements = {"VU-MEM-TABLE", "VU-MEM-ADDR-MAPPING"},
             .summary = "a second SET_MEM_TABLE with new userspace addresses replaces the first",
             .device = "vsock") {
  QemuFrontend q = started(ctx, without_mem_slots());
  prove_datapath(ctx, q, "with the first table", 5101);
  q.stop();
  ctx.ram().set_uaddr(0, 0x7e1100000000ull);
  ctx.ram().set_uaddr(1, 0x7e1000000000ull);
  q.start();
  prove_datapath(ctx, q, "after the table was replaced (rings at new userspace addresses)", 5102);
}

CONFORM_CASE(add_rem_mem_reg,
             .id = "memory.add_rem_mem_reg",
             .requirements = {"VU-ADD-MEM-REG", "VU-REM-MEM-REG", "VU-MAX-MEM-SLOTS"},
             .summary = "ADD_MEM_REG up to GET_MAX_MEM_SLOTS, REM_MEM_REG, re-add; rings keep working",
             .device = "vsock",
             .protocol_features = {pf::CONFIGURE_MEM_SLOTS}) {
  QemuFrontend q(ctx);
  q.realize();
  check(q.uses_mem_slots(), "CONFIGURE_MEM_SLOTS negotiated", "not negotiated");
  uint64_t slots = ctx.fe().get_max_mem_slots();
  check(slots >= 2, "GET_MAX_MEM_SLOTS of at least 2 (the guest has two regions)", std::to_string(slots));
  q.start();
  prove_datapath(ctx, q, "with regions added by ADD_MEM_REG", 5103);
  // Fill the remaining slots with one-page regions, then one more must be refused.
  auto& fe = ctx.fe();
  std::vector<vhu::MemoryRegion> extra;
  const uint64_t cap = std::min<uint64_t>(slots, 600);
  for (uint64_t i = ctx.ram().num_regions(); i < cap; ++i) {
    vhu::MemoryRegion r{0x200000000ull + i * 0x10000, 4096, 0x600000000000ull + i * 0x10000, 0};
    fe.add_mem_reg(r, small_memfd(4096));
    extra.push_back(r);
  }
  if (slots <= 600) {
    vhu::MemoryRegion over{0x300000000ull, 4096, 0x680000000000ull, 0};
    Message m = Message::request_with(req(FrontendReq::ADD_MEM_REG), vhu::MemRegionMsg{0, over});
    m.fds.push_back(small_memfd(4096));
    if (expect_refused(ctx, std::move(m), fmt::format("ADD_MEM_REG beyond the {} slots it announced", slots))) return;
  }
  for (const auto& r : extra) fe.rem_mem_reg(r);
  prove_datapath(ctx, q, "after the extra regions were removed", 5104);
}

CONFORM_CASE(rem_mem_reg_closes_fd,
             .id = "memory.rem_mem_reg_closes_fd",
             .requirements = {"VU-REM-MEM-REG-FD"},
             .summary = "an fd sent with REM_MEM_REG is closed by the back-end",
             .protocol_features = {pf::CONFIGURE_MEM_SLOTS}) {
  ctx.handshake();
  auto& fe = ctx.fe();
  vhu::MemoryRegion r{0x200000000ull, 4096, 0x600000000000ull, 0};
  fe.add_mem_reg(r, small_memfd(4096));
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) fail("a pipe", "pipe2 failed");
  vhu::UniqueFd rd(p[0]);
  Message m = Message::request_with(req(FrontendReq::REM_MEM_REG), vhu::MemRegionMsg{0, r});
  m.fds.emplace_back(p[1]);  // the only write end, once sent
  expect_accepted(ctx, std::move(m), "REM_MEM_REG with an fd");
  ctx.expect_alive("after REM_MEM_REG");
  // EOF on the read end means every write end is closed, the back-end's too.
  pollfd pf{rd.get(), POLLIN, 0};
  bool eof = ::poll(&pf, 1, 500) == 1 && (pf.revents & POLLHUP);
  check(eof, "the back-end to close the fd that came with REM_MEM_REG", "the pipe's write end is still open after 500 ms");
}

CONFORM_CASE(fd_count_mismatch,
             .id = "memory.fd_count_mismatch",
             .requirements = {"VU-MEM-TABLE", "VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "SET_MEM_TABLE with two regions and one fd is refused; the back-end survives") {
  ctx.handshake();
  Message m = set_mem_table_message(ctx.ram().regions());
  m.fds.push_back(ctx.ram().dup_fd(0));
  expect_refused(ctx, std::move(m), "SET_MEM_TABLE with 2 regions and 1 fd");
}

CONFORM_CASE(zero_size_region,
             .id = "memory.zero_size_region",
             .requirements = {"VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "a region of size 0 is refused; the back-end survives") {
  ctx.handshake();
  auto regions = ctx.ram().regions();
  regions[1].memory_size = 0;
  Message m = set_mem_table_message(regions);
  m.fds = ctx.ram().dup_fds();
  expect_refused(ctx, std::move(m), "SET_MEM_TABLE with a zero-size region");
}

CONFORM_CASE(overflowing_region,
             .id = "memory.overflowing_region",
             .requirements = {"VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "a region whose gpa or uaddr range wraps past 2^64 is refused; the back-end survives") {
  ctx.handshake();
  for (int which = 0; which < 2; ++which) {
    auto regions = ctx.ram().regions();
    if (which == 0) regions[1].guest_phys_addr = ~0ull - 0x1000;
    else regions[1].userspace_addr = ~0ull - 0x1000;
    Message m = set_mem_table_message(regions);
    m.fds = ctx.ram().dup_fds();
    if (expect_refused(ctx, std::move(m), which == 0 ? "a region whose gpa range wraps" : "a region whose uaddr range wraps"))
      return;
  }
}

CONFORM_CASE(mmap_offset_beyond_file,
             .id = "memory.mmap_offset_beyond_file",
             .requirements = {"VU-REPLY-ACK-VALUE", "VU-ERROR-CLOSE"},
             .summary = "a region whose mmap_offset + size lies beyond its file is refused; the back-end survives") {
  ctx.handshake();
  auto regions = ctx.ram().regions();
  regions[1].mmap_offset = ctx.ram().file_size(1);
  Message m = set_mem_table_message(regions);
  m.fds = ctx.ram().dup_fds();
  expect_refused(ctx, std::move(m), "SET_MEM_TABLE with mmap_offset beyond the file");
}

CONFORM_CASE(overlapping_regions,
             .id = "memory.overlapping_regions",
             .requirements = {"VU-MEM-NO-OVERLAP", "VU-ERROR-CLOSE"},
             .summary = "regions overlapping in gpa: refused under the newest text; either answer, no crash, under upstream",
             .spec_dependent = true) {
  ctx.handshake();
  auto regions = ctx.ram().regions();
  regions[1].guest_phys_addr = regions[0].guest_phys_addr + 0x1000;
  Message m = set_mem_table_message(regions);
  m.fds = ctx.ram().dup_fds();
  if (ctx.newest()) {
    expect_refused(ctx, std::move(m), "SET_MEM_TABLE with regions overlapping in gpa");
    return;
  }
  auto& fe = ctx.fe();
  if (fe.reply_ack()) m.hdr.flags |= vhu::kFlagNeedReply;
  auto o = fe.try_request(m);
  ctx.note("upstream text has no overlap rule; the back-end answered: " + o.text);
  if (o.kind != Outcome::Closed) ctx.expect_alive("after overlapping regions");
  check(!ctx.backend().crashed(), "the back-end to survive overlapping regions", ctx.backend().status_text());
}

}  // namespace
}  // namespace conform
