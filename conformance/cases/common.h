// Helpers shared by the case files: refusal checks and a small vsock data path
// that any case can use to prove the rings work.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "case.h"
#include "qemu.h"
#include "watcher.h"

namespace conform {

// Sends `m` (need_reply when REPLY_ACK is negotiated) and expects it refused:
// a non-zero ack, or the connection closed. Then, if still connected, the
// back-end must keep answering. Returns true when it closed the connection.
bool expect_refused(Ctx& ctx, vhu::Message m, const std::string& what);

// Sends `m` that the back-end must accept: ack 0 when REPLY_ACK is negotiated.
void expect_accepted(Ctx& ctx, vhu::Message m, const std::string& what);

// Queues `n` RST packets on tx (they address no connection, so no reply may
// come) and waits until the back-end has used them all.
void tx_consume(Ctx& ctx, VsockGuest& g, unsigned n, const std::string& what, bool kick = true);

// Guest-initiated stream to host port `port` (the host listens on <uds>_port):
// REQUEST, RESPONSE, the host accepts. Returns the host's socket.
vhu::UniqueFd open_stream(Ctx& ctx, VsockGuest& g, uint32_t guest_port, uint32_t host_port, int listen_fd);

// Data both ways on an open stream, checked byte for byte.
void exchange(Ctx& ctx, VsockGuest& g, GuestConn& c, int host_fd, const std::string& tag);

uint32_t req(vhu::FrontendReq r);

// QEMU 7.2's realize and start (DRIVER_OK): rx and tx handed over and running.
QemuFrontend started(Ctx& ctx, QemuOptions o = {});

// The virtio features QEMU acks at start with options `o`: those of the guest
// the back-end offers, and PROTOCOL_FEATURES when that was negotiated.
uint64_t qemu_acked_features(Ctx& ctx, const QemuOptions& o = {});

// Of what the back-end offered, VERSION_1 and PROTOCOL_FEATURES only: the
// least a case can ack (libvhost-user exits on a feature set without
// VERSION_1, ../shared/INTEROP.md).
uint64_t minimal_features(const Frontend& fe);

// A dirty log in a memfd covering guest memory, as QEMU sizes it, and
// guest-physical addresses below `end`; it starts `offset` bytes into the file.
vhu::DirtyLog make_dirty_log(Ctx& ctx, uint64_t end = 0, uint64_t offset = 0);

// QEMU 7.2 told no to CONFIGURE_MEM_SLOTS, so that its memory goes in one
// SET_MEM_TABLE at every start.
QemuOptions without_mem_slots();

// SET_MEM_TABLE describing `regions`; the caller attaches the fds.
vhu::Message set_mem_table_message(const std::vector<vhu::MemoryRegion>& regions);

// Nothing odd in what the guest took off its rings (VsockGuest::anomalies);
// otherwise fails with `want` and the first oddity.
void expect_no_anomalies(VsockGuest& g, const std::string& want);

// How often an eventfd was signalled, for a note: "never", "once", "3 times".
std::string times(uint64_t n);

// The next rx packet of op `o` to guest port `guest_port` within `ms` (or the
// case's deadline, if nearer); packets that do not match stay in the backlog.
std::optional<RxPacket> wait_op(Ctx& ctx, VsockGuest& g, vhu::vsock::Op o, uint32_t guest_port, int ms = 2000);

// Linux since 6.12.92 resets a flow once the packets it holds for it, plus
// the next, times SKB_TRUESIZE(0) exceed its buf_alloc (LINUX-RX-PACKET-LIMIT).
constexpr uint32_t kLinuxSkbTruesize = 576;  // SKB_TRUESIZE(0) on x86-64 and arm64
constexpr uint32_t linux_rx_packet_limit(uint32_t buf_alloc) { return buf_alloc / kLinuxSkbTruesize; }

// Where two byte strings first differ, for a message a back-end author can act on.
std::string first_difference(std::string_view want, std::string_view got);

// Appends an RW packet's payload to the SEQPACKET message it continues (the
// last of `msgs`); its EOM ends that message and starts the next.
void add_to_messages(std::vector<std::string>& msgs, const RxPacket& p);

// LINUX-RX-PACKET-LIMIT on a flow into guest `g`, whose connection `c` reads
// nothing yet: `flow` sends more of `all` (messages, or on a stream writes, of
// `size` bytes, counting them in `sent`) and returns the packets of the flow
// `g` took. At most linux_rx_packet_limit() RW packets may arrive before the
// guest reads, the connection stays open, and once it reads, telling the
// sender as its queue drains as Linux does, every byte arrives: on SEQPACKET
// every message whole, with EOM; on a stream in order, with no EOM.
void expect_within_linux_packet_limit(Ctx& ctx, VsockGuest& g, GuestConn& c, std::string_view all, size_t size,
                                      const int& sent, const std::function<std::vector<RxPacket>()>& flow);

}  // namespace conform
