// The input framing of the `vhost_user_messages` fuzz target (fuzz/README.md,
// "vhost_user_messages"), shared with the seed generator, the trace
// converter and vhost-user-conform --record-corpus, so all agree byte for byte.
//
// An input is a sequence of records, each a 12-byte little-endian header and
// `size` payload bytes:
//   u32 request   a front-end request id (any value), or a harness action (kAction*)
//   u32 flags     the vhost-user header flags, sent as given
//   u16 size      payload bytes that follow; also the header's size field
//   u8  fds       0: the fds the request's FdRule asks for; n > 0: exactly n - 1 (at most 8)
//   u8  aux       kAuxSignal: eventfds are handed over already signalled (as QEMU does);
//                 kAuxHungUp / kAuxRegularFile: where an eventfd belongs, an fd of the wrong kind
// A record cut short by the end of the input is dropped.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace vhu::fuzz::framing {

struct RecordHeader {
  uint32_t request;
  uint32_t flags;
  uint16_t size;
  uint8_t fds;
  uint8_t aux;
};
static_assert(sizeof(RecordHeader) == 12);

inline constexpr uint8_t kAuxSignal = 1;
// The read end of a pipe whose write end is closed: epoll reports it hung up at once.
inline constexpr uint8_t kAuxHungUp = 2;
// A regular (memory) file: epoll refuses to watch it. Wins over kAuxHungUp.
inline constexpr uint8_t kAuxRegularFile = 4;

// Harness actions: things the front-end and guest do that are not messages.
inline constexpr uint32_t kActionBase = 0xffff0000;
// payload u32 ring: write 1 to the last kick eventfd handed over for that ring.
inline constexpr uint32_t kActionKick = kActionBase + 1;
// payload u64 offset, then bytes: written into the memfd of memory region
// (flags % regions handed over), at offset % its size. Lays out rings and packets.
inline constexpr uint32_t kActionPoke = kActionBase + 2;
// payload bytes: written to our end of the last LOAD pipe; flags bit 0 closes it after.
inline constexpr uint32_t kActionStatePipe = kActionBase + 3;
// The front-end hangs up: Backend::disconnect(), then a new session begins.
inline constexpr uint32_t kActionDisconnect = kActionBase + 4;
// payload bytes: written onto the socket as they are, with fds - 1 eventfds
// (a message cut short, split across writes, or garbage). The stream may be
// out of step until the session ends. Targets that call the back-end's
// handler directly, with no socket, skip it.
inline constexpr uint32_t kActionRaw = kActionBase + 5;

inline constexpr size_t kMaxPayload = 4096;  // vhu::ChannelLimits::max_payload

inline void append(std::vector<uint8_t>& out, const RecordHeader& h, std::span<const uint8_t> payload) {
  RecordHeader hh = h;
  hh.size = static_cast<uint16_t>(payload.size());
  const auto* p = reinterpret_cast<const uint8_t*>(&hh);
  out.insert(out.end(), p, p + sizeof hh);
  out.insert(out.end(), payload.begin(), payload.end());
}

// Calls fn(header, payload) for each record of `input` in order. A record cut
// short by the end of the input, or longer than kMaxPayload, ends the input.
template <class Fn>
void for_each_record(std::span<const uint8_t> input, Fn&& fn) {
  size_t pos = 0;
  while (input.size() - pos >= sizeof(RecordHeader)) {
    RecordHeader h;
    std::memcpy(&h, input.data() + pos, sizeof h);
    pos += sizeof h;
    if (h.size > kMaxPayload || h.size > input.size() - pos) return;
    fn(h, input.subspan(pos, h.size));
    pos += h.size;
  }
}

template <class T>
void append_pod(std::vector<uint8_t>& out, const RecordHeader& h, const T& body) {
  append(out, h, {reinterpret_cast<const uint8_t*>(&body), sizeof body});
}

}  // namespace vhu::fuzz::framing
