// One VM as the command line describes it: the vhost-user socket (listening,
// connecting with --client, or inherited with --fd), the front-end connection
// of the moment, the Backend session it drives, and the host-side listener on
// uds-path.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "backend.h"
#include "event_loop.h"
#include "host_listener.h"
#include "message_reader.h"
#include "router.h"

namespace vsockref {

struct VmConfig {
  uint64_t guest_cid = 3;
  std::string socket;    // vhost-user socket path
  std::string uds_path;  // hybrid-vsock host side; empty: none
  std::set<std::string> groups{"default"};
  // Linux's default vsock buffer: with 64 KiB the guest could have only one
  // full-size packet in flight, and each one waited for a CREDIT_UPDATE.
  uint32_t tx_buffer_size = 256 * 1024;
  uint32_t queue_size = 1024;
  bool client = false;   // connect to `socket` instead of listening on it
  // --fd: the vhost-user socket is this inherited descriptor instead of a
  // path. vhost-user.rst does not say whether it is listening or connected
  // (libvirt passes either, depending on the device), so both are served.
  int socket_fd = -1;
  vhu::SpecText spec = vhu::SpecText::Upstream;  // whose ring-start rule (BackendOptions)
};

class Vm final : private ReplySink {
 public:
  Vm(EventLoop& loop, VmConfig cfg, Router* router);
  ~Vm() override;
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Listens (or connects) and opens the host side.
  vhu::Result<void> start();
  // Only the host side (uds-path); with serve() for tests.
  vhu::Result<void> start_host_side();
  // Serves a front-end connection that already exists (tests, socketpair).
  void serve(vhu::UniqueFd sock);
  bool connected() const { return conn_.valid(); }
  // Called once the front-end of a connected --fd socket has gone: no other
  // can ever come, so the program has nothing left to serve for this VM.
  std::function<void()> on_done;
  Backend& backend() { return backend_; }
  const VmConfig& config() const { return cfg_; }

 private:
  struct Out {
    std::vector<uint8_t> bytes;
    std::vector<vhu::UniqueFd> fds;
    size_t off = 0;
  };
  void send(vhu::Message&& reply) override;
  void flush();
  void on_listen();
  void on_frontend(uint32_t events);
  void read_messages();
  void drop_frontend(const std::string& why);
  void update_interest();
  void try_connect();
  vhu::Result<void> adopt_fd();

  EventLoop& loop_;
  VmConfig cfg_;
  Router* router_;
  std::string name_;
  Backend backend_;
  std::unique_ptr<HostListener> host_;
  vhu::UniqueFd listen_;
  vhu::UniqueFd conn_;
  MessageReader reader_;
  std::deque<Out> out_;
  bool paused_ = false;  // a reply is deferred: read no further message
  // Fault drop_fds_when_pipelined: SET_OWNER came and the front-end has not
  // waited on a reply since, so what it sends now is part of one burst.
  bool owner_burst_ = false;
  EventLoop::TimerId reconnect_timer_ = 0;
  EventLoop::TimerId resume_timer_ = 0;
  bool owns_socket_file_ = false;
};

}  // namespace vsockref
