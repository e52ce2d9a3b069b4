// The vhost-user device layer: one front-end session of one VM. Table-driven
// dispatch over vhu::FrontendReq, feature and protocol-feature negotiation,
// the memory table, ring states, REPLY_ACK, DEVICE_STATE transfers.
//
// In-process use (fuzzers, unit tests) needs no socket:
//   EventLoop loop; MySink sink;                 // ReplySink: collects replies
//   Backend b(loop, sink, BackendOptions{...});
//   b.handle(std::move(msg));                     // each vhost-user message
//   b.poll_once();                                // kicks, host sockets, pipes
// handle() returns Close when the front-end sent something malformed (the
// caller drops the connection and calls disconnect()), Wait when a reply is
// deferred (CHECK_DEVICE_STATE while the load is still being read: feed no
// more messages until waiting() is false; poll_once() completes it).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "event_loop.h"
#include "ring_io.h"
#include "router.h"
#include "vhu/dirty_log.h"
#include "vhu/features.h"
#include "vhu/guest_memory.h"
#include "vhu/messages.h"
#include "vring.h"
#include "vsock_device.h"

namespace vsockref {

class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void send(vhu::Message&& reply) = 0;
};

struct BackendOptions {
  VsockOptions vsock;
  uint32_t max_queue_size = 1024;  // largest SET_VRING_NUM accepted
  // Whose "Ring states" rule starts a ring: upstream (its first kick) or
  // newest (SET_VRING_KICK itself). The texts conflict; README, "Ring states".
  vhu::SpecText spec = vhu::SpecText::Upstream;
};

enum class Disposition { Continue, Close, Wait };

class Backend final : private RingIo {
 public:
  static constexpr unsigned kNumQueues = 3;

  Backend(EventLoop& loop, ReplySink& sink, BackendOptions opts, Router* router = nullptr);
  ~Backend() override;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  Disposition handle(vhu::Message msg);
  bool waiting() const { return deferred_check_; }
  // One non-blocking round of the event loop.
  void poll_once() { loop_.run_once(0); }
  // The front-end connection is gone: back to the state of a fresh session.
  void disconnect();
  // Called when a deferred reply has gone out (the server resumes reading).
  std::function<void()> on_resume;

  VsockDevice& device() { return device_; }
  static uint64_t offered_features();
  static uint64_t offered_protocol_features();
  uint64_t acked_features() const { return features_; }
  uint64_t acked_protocol_features() const { return protocol_features_; }
  const Vring& ring(unsigned q) const { return rings_[q]; }
  bool suspended() const;

  // The dispatch table's handlers; each returns the value a REPLY_ACK carries
  // (0 success), or an Error that closes the connection.
  struct Ctx {
    vhu::Message& msg;
    std::string name;
    bool replied = false;   // the handler sent the request's own reply
    bool deferred = false;  // the reply comes later (CHECK_DEVICE_STATE)
    std::string refusal;    // why lookup() found no handler
  };
  using HandlerFn = vhu::Result<uint64_t> (Backend::*)(Ctx&);

 private:
  // RingIo
  bool ring_usable(unsigned q) const override;
  bool ring_started(unsigned q) const override;
  std::optional<vhu::Chain> pop(unsigned q) override;
  void push(unsigned q, uint16_t head, uint32_t written) override;
  bool rearm(unsigned q) override;
  const vhu::GuestMemory& memory() const override { return mem_; }
  void request_processing() override { run_device(); }

  void reply(const vhu::Message& req, vhu::Message&& r);
  void reply_u64(const vhu::Message& req, uint64_t v);
  void run_device();
  void signal(const vhu::UniqueFd& fd);
  // status_ with DEVICE_NEEDS_RESET while a ring is broken (backend.cpp).
  uint8_t reported_status() const;
  vhu::Result<void> bind_ring(unsigned q);
  // What ring q's writes mark in the dirty log now (backend.cpp).
  vhu::DeviceQueue::Logging logging_for(unsigned q) const;
  // The handler for a request, or null with ctx.refusal set when the request
  // is unknown, unsupported or needs a feature that was not negotiated.
  HandlerFn lookup(uint32_t id, Ctx& ctx) const;
  void arm_poll_timer();
  void cancel_transfer();
  void rebind_all();
  void stop_ring(unsigned q);
  void watch_kick(unsigned q);
  void start_ring(unsigned q);
  void on_kick(unsigned q, uint32_t events);
  void reset_rings();
  void device_reset(const char* why);

  // Handlers (backend_dispatch.cpp).
  vhu::Result<uint64_t> get_features(Ctx&);
  vhu::Result<uint64_t> set_features(Ctx&);
  vhu::Result<uint64_t> get_protocol_features(Ctx&);
  vhu::Result<uint64_t> set_protocol_features(Ctx&);
  vhu::Result<uint64_t> set_owner(Ctx&);
  vhu::Result<uint64_t> reset_owner(Ctx&);
  vhu::Result<uint64_t> reset_device(Ctx&);
  vhu::Result<uint64_t> set_mem_table(Ctx&);
  vhu::Result<uint64_t> set_log_base(Ctx&);
  vhu::Result<uint64_t> set_log_fd(Ctx&);
  vhu::Result<uint64_t> get_max_mem_slots(Ctx&);
  vhu::Result<uint64_t> add_mem_reg(Ctx&);
  vhu::Result<uint64_t> rem_mem_reg(Ctx&);
  vhu::Result<uint64_t> set_vring_num(Ctx&);
  vhu::Result<uint64_t> set_vring_addr(Ctx&);
  vhu::Result<uint64_t> set_vring_base(Ctx&);
  vhu::Result<uint64_t> get_vring_base(Ctx&);
  vhu::Result<uint64_t> set_vring_kick(Ctx&);
  vhu::Result<uint64_t> set_vring_call(Ctx&);
  vhu::Result<uint64_t> set_vring_err(Ctx&);
  vhu::Result<uint64_t> set_vring_enable(Ctx&);
  vhu::Result<uint64_t> get_queue_num(Ctx&);
  vhu::Result<uint64_t> get_config(Ctx&);
  vhu::Result<uint64_t> set_config(Ctx&);
  vhu::Result<uint64_t> get_status(Ctx&);
  vhu::Result<uint64_t> set_status(Ctx&);
  vhu::Result<uint64_t> set_device_state_fd(Ctx&);
  vhu::Result<uint64_t> check_device_state(Ctx&);

  vhu::Result<unsigned> ring_index(const Ctx& c, uint64_t index) const;
  // Device state transfer (device_transfer.cpp).
  uint64_t start_save(vhu::UniqueFd fd);
  uint64_t start_load(vhu::UniqueFd fd);
  void transfer_event();
  void finish_load();
  void answer_deferred_check();

  EventLoop& loop_;
  ReplySink& sink_;
  BackendOptions opts_;
  VsockDevice device_;
  vhu::GuestMemory mem_;
  vhu::DirtyLog log_;     // SET_LOG_BASE; marked while LOG_ALL is negotiated
  vhu::UniqueFd log_fd_;  // SET_LOG_FD: kept, never signalled (the spec's "may")
  std::array<Vring, kNumQueues> rings_;
  uint64_t features_ = 0;
  bool features_set_ = false;
  uint64_t protocol_features_ = 0;
  bool protocol_features_set_ = false;
  // GET_PROTOCOL_FEATURES came on this connection; only a fault looks at it.
  bool protocol_features_asked_ = false;
  bool owner_set_ = false;
  // What the front-end wrote; DEVICE_NEEDS_RESET is never kept in it, being
  // the device's to report (reported_status).
  uint8_t status_ = 0;
  bool in_device_ = false;  // re-entrancy guard for run_device()
  bool rerun_ = false;      // work arrived while the device was running

  // DEVICE_STATE transfer in progress or finished.
  enum class Transfer { None, Saving, Loading, Done, Failed };
  Transfer transfer_ = Transfer::None;
  vhu::UniqueFd transfer_fd_;
  std::vector<uint8_t> transfer_buf_;
  size_t transfer_off_ = 0;
  bool deferred_check_ = false;
  vhu::Message deferred_req_;
  EventLoop::TimerId transfer_timer_ = 0;
  EventLoop::TimerId poll_timer_ = 0;
};

}  // namespace vsockref
