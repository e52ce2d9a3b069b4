// The emulated front-end: speaks vhost-user over libvhu's channel, records
// every message for the report, and turns protocol errors into case
// failures. Cases that probe error handling use the try_* forms, which
// report what happened instead of failing.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "msglog.h"
#include "vhu/channel.h"
#include "vhu/dirty_log.h"
#include "vhu/messages.h"

namespace conform {

using Clock = std::chrono::steady_clock;

// What came back for a request that may be refused.
struct Outcome {
  enum Kind { Reply, Closed, Timeout, Garbled } kind = Timeout;
  vhu::Message reply;
  uint64_t u64 = 0;   // the reply's u64 when it has one (ack value)
  std::string text;   // human description

  bool ack_ok() const { return kind == Reply && u64 == 0; }
  bool refused() const { return kind == Closed || (kind == Reply && u64 != 0); }
};

class Frontend {
 public:
  Frontend(vhu::UniqueFd sock, MessageLog& log, Clock::time_point deadline);

  bool connected() const { return ch_.valid(); }
  void close() { ch_.close(); }
  int fd() const { return ch_.fd(); }
  vhu::Channel& channel() { return ch_; }
  MessageLog& log() { return log_; }
  Clock::time_point deadline() const { return deadline_; }
  // Milliseconds left for one wait: min(reply_timeout, time to the case deadline).
  int wait_ms(int want = -1) const;
  void set_reply_timeout_ms(int ms) { reply_timeout_ms_ = ms; }

  // ---- raw ----
  vhu::Result<void> try_send(const vhu::Message& m, const std::string& note = {});
  void send(const vhu::Message& m, const std::string& note = {});
  vhu::Result<vhu::Message> try_recv(int timeout_ms);
  // The reply to `request`: reply flag, version 1 and the request echoed, or a failure.
  vhu::Message expect_reply(uint32_t request, const std::string& waiting_for = {});
  // Sends and collects the reply (own reply or need_reply ack) without judging it.
  Outcome try_request(const vhu::Message& m, int timeout_ms = -1);
  // Nothing at all arrives on the main socket for `ms` (no unsolicited reply).
  std::optional<vhu::Message> unsolicited(int ms);

  // ---- typed requests (failures on any protocol error) ----
  uint64_t get_features();
  uint64_t get_protocol_features();
  void set_features(uint64_t f);
  void set_protocol_features(uint64_t f);
  void set_owner();
  uint64_t get_queue_num();
  uint64_t get_max_mem_slots();
  void set_mem_table(const std::vector<vhu::MemoryRegion>& regions, std::vector<vhu::UniqueFd> fds);
  void add_mem_reg(const vhu::MemoryRegion& r, vhu::UniqueFd fd);
  void rem_mem_reg(const vhu::MemoryRegion& r);
  void set_vring_num(uint32_t index, uint32_t num);
  void set_vring_base(uint32_t index, uint32_t base);
  void set_vring_addr(const vhu::VringAddr& a);
  uint32_t get_vring_base(uint32_t index);
  // fd < 0: the no-fd flag.
  void set_vring_fd(vhu::FrontendReq req, uint32_t index, int fd);
  void set_vring_enable(uint32_t index, bool enable);
  std::vector<uint8_t> get_config(uint32_t offset, uint32_t size);
  uint64_t get_status();
  void set_status(uint64_t s);
  void reset_device();
  // SET_LOG_BASE as QEMU sends it: a dup of the log's fd, its offset (QEMU's
  // is 0), no need_reply. Needs LOG_SHMFD, with which QEMU waits for a
  // reply: its absence fails.
  void set_log_base(const vhu::DirtyLog& log);
  // SET_BACKEND_REQ_FD with a fresh socketpair; our end becomes backend_req().
  void set_backend_req_fd();
  vhu::Channel& backend_req() { return backend_req_; }

  // need_reply on every reply-less request when REPLY_ACK is negotiated.
  // QEMU does it only for SET_MEM_TABLE, ADD_MEM_REG and SET_BACKEND_REQ_FD.
  enum class AckPolicy { Qemu72, Always, Never };
  void set_ack_policy(AckPolicy p) { policy_ = p; }
  // Sends a reply-less request, with need_reply when the policy (or force) says so,
  // and fails when the ack is missing or non-zero.
  void send_setter(vhu::Message m, bool force_need_reply = false);

  // ---- negotiation state ----
  std::optional<uint64_t> offered_features, offered_protocol;
  std::optional<uint64_t> acked_features, acked_protocol;
  bool protocol_negotiated(unsigned bit) const;
  bool reply_ack() const;

 private:
  bool wants_ack(uint32_t request) const;

  vhu::Channel ch_;
  vhu::Channel backend_req_;
  MessageLog& log_;
  Clock::time_point deadline_;
  int reply_timeout_ms_ = 2000;
  AckPolicy policy_ = AckPolicy::Qemu72;
};

// "0x8 (REPLY_ACK)"-style text for failure messages. Device feature bits
// (0-23) are named for vsock only; for other devices they print as "bit N".
std::string pf_text(uint64_t mask);
std::string vf_text(uint64_t mask, bool vsock);

}  // namespace conform
