#include "vm.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "faults.h"
#include "log.h"
#include "vhu/channel.h"

namespace vsockref {

namespace {
// Stop reading requests while this many reply bytes wait for a front-end
// that does not read them: bounded memory, no blocking.
constexpr size_t kMaxQueuedReplyBytes = 64 * 1024;
}  // namespace

Vm::Vm(EventLoop& loop, VmConfig cfg, Router* router)
    : loop_(loop),
      cfg_(std::move(cfg)),
      router_(router),
      name_(fmt::format("cid {}", cfg_.guest_cid)),
      backend_(loop, *this,
               BackendOptions{VsockOptions{cfg_.guest_cid, cfg_.tx_buffer_size, cfg_.uds_path, name_}, cfg_.queue_size, cfg_.spec},
               router) {
  if (router_) router_->add(cfg_.guest_cid, cfg_.groups, &backend_.device());
  backend_.on_resume = [this] {
    paused_ = false;
    update_interest();
    // Messages that arrived meanwhile wait in the socket; read them from the
    // loop, not from inside the Backend call that is finishing the transfer.
    if (!resume_timer_)
      resume_timer_ = loop_.add_timer(std::chrono::milliseconds(0), [this] {
        resume_timer_ = 0;
        read_messages();
      });
  };
}

Vm::~Vm() {
  if (router_) router_->remove(&backend_.device());
  if (reconnect_timer_) loop_.cancel_timer(reconnect_timer_);
  if (resume_timer_) loop_.cancel_timer(resume_timer_);
  if (conn_) loop_.remove(conn_.get());
  if (listen_) loop_.remove(listen_.get());
  if (owns_socket_file_) ::unlink(cfg_.socket.c_str());
}

vhu::Result<void> Vm::start_host_side() {
  if (cfg_.uds_path.empty()) return vhu::Ok();
  host_ = std::make_unique<HostListener>(
      loop_, cfg_.uds_path,
      [this](vhu::UniqueFd fd, uint32_t port) { backend_.device().host_connect(std::move(fd), port); }, name_);
  if (auto r = host_->start(); !r) return vhu::Err(fmt::format("uds-path {}: {}", cfg_.uds_path, r.message()));
  return vhu::Ok();
}

vhu::Result<void> Vm::start() {
  VHU_TRY(start_host_side());
  if (cfg_.socket_fd >= 0) return adopt_fd();
  if (cfg_.client) {
    try_connect();
    return vhu::Ok();
  }
  auto l = vhu::listen_unix(cfg_.socket, 4);
  if (!l) return vhu::Err(fmt::format("socket {}: {}", cfg_.socket, l.message()));
  listen_ = std::move(*l);
  owns_socket_file_ = true;
  set_nonblocking(listen_.get());
  VLOG(Info, "{}: listening on {} (host side {})", name_, cfg_.socket, cfg_.uds_path.empty() ? "none" : cfg_.uds_path);
  return loop_.add(listen_.get(), EPOLLIN, [this](uint32_t) { on_listen(); });
}

vhu::Result<void> Vm::adopt_fd() {
  const int n = cfg_.socket_fd;
  auto sockopt = [n](int name, int& value) {
    socklen_t len = sizeof value;
    return ::getsockopt(n, SOL_SOCKET, name, &value, &len) == 0;
  };
  int domain = 0, type = 0, listening = 0;
  if (!sockopt(SO_DOMAIN, domain) || !sockopt(SO_TYPE, type) || !sockopt(SO_ACCEPTCONN, listening))
    return vhu::Err(fmt::format("--fd {}: not an open socket: {}", n, std::strerror(errno)));
  if (domain != AF_UNIX || type != SOCK_STREAM)
    return vhu::Err(fmt::format("--fd {}: not a Unix stream socket (vhost-user needs one, for its fds)", n));
  // Ours from now on; a program the back-end might start must not inherit it.
  vhu::UniqueFd fd(n);
  (void)::fcntl(n, F_SETFD, FD_CLOEXEC);
  if (!listening) {
    VLOG(Info, "{}: serving the connected socket of --fd {} (host side {})", name_, n,
         cfg_.uds_path.empty() ? "none" : cfg_.uds_path);
    serve(std::move(fd));
    return vhu::Ok();
  }
  listen_ = std::move(fd);
  set_nonblocking(listen_.get());
  VLOG(Info, "{}: listening on the socket of --fd {} (host side {})", name_, n,
       cfg_.uds_path.empty() ? "none" : cfg_.uds_path);
  return loop_.add(listen_.get(), EPOLLIN, [this](uint32_t) { on_listen(); });
}

void Vm::try_connect() {
  reconnect_timer_ = 0;
  auto c = vhu::connect_unix(cfg_.socket);
  if (!c) {
    VLOG(Debug, "{}: connect {}: {}; retrying", name_, cfg_.socket, c.message());
    reconnect_timer_ = loop_.add_timer(std::chrono::milliseconds(500), [this] { try_connect(); });
    return;
  }
  VLOG(Info, "{}: connected to front-end at {}", name_, cfg_.socket);
  serve(std::move(*c));
}

void Vm::on_listen() {
  vhu::UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd) return;
  VLOG(Info, "{}: front-end connected", name_);
  serve(std::move(fd));
}

void Vm::serve(vhu::UniqueFd sock) {
  conn_ = std::move(sock);
  reader_ = MessageReader{};
  out_.clear();
  paused_ = false;
  owner_burst_ = false;
  // One front-end at a time: the next waits in the backlog until this one goes.
  if (listen_) loop_.modify(listen_.get(), 0);
  const int fd = conn_.get();
  if (auto r = loop_.add(fd, EPOLLIN, [this](uint32_t ev) { on_frontend(ev); }); !r) {
    drop_frontend(r.message());
    return;
  }
  read_messages();
}

void Vm::update_interest() {
  if (!conn_) return;
  uint32_t ev = 0;
  if (!paused_ && out_.size() < 64) {
    size_t queued = 0;
    for (const Out& o : out_) queued += o.bytes.size() - o.off;
    if (queued < kMaxQueuedReplyBytes) ev |= EPOLLIN;
  }
  if (!out_.empty()) ev |= EPOLLOUT;
  loop_.modify(conn_.get(), ev);
}

void Vm::on_frontend(uint32_t events) {
  if (events & EPOLLOUT) flush();
  if (!conn_) return;
  // While a reply is deferred nothing is read, but epoll reports a hang-up
  // whatever the interest: waiting for the transfer (up to its timeout, if the
  // state fd never ends) would spin the loop and keep the next front-end out.
  // Nobody is left to read the deferred reply.
  if (paused_ && (events & (EPOLLHUP | EPOLLERR))) {
    drop_frontend("front-end hung up while a reply was deferred");
    return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_messages();
}

void Vm::read_messages() {
  while (conn_ && !paused_) {
    size_t queued = 0;
    for (const Out& o : out_) queued += o.bytes.size() - o.off;
    if (queued >= kMaxQueuedReplyBytes) break;
    auto m = reader_.read(conn_.get());
    if (!m) {
      if (VSOCKREF_FAULT(hang_on_truncated_header) && m.error().kind == vhu::ErrorKind::Desync) {
        loop_.modify(conn_.get(), 0);  // neither read nor dropped: the listener stays shut
        return;
      }
      if (m.error().kind == vhu::ErrorKind::Closed)
        drop_frontend("front-end disconnected");
      else
        drop_frontend(m.message());
      return;
    }
    if (!*m) break;
    if (VSOCKREF_FAULT(drop_fds_when_pipelined)) {
      // The connection-start burst (INTEROP bug 16): a SET_MEM_TABLE sent right
      // behind SET_OWNER, the front-end waiting on nothing in between, loses its
      // fds. Not "read in the same wake-up": how a burst splits across reads
      // depends on the machine's load, and the fault went unseen under CI's.
      if (owner_burst_ && (**m).hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_MEM_TABLE))
        (**m).fds.clear();
      // A request the front-end waits on ends the burst.
      const auto* info = vhu::request_info(vhu::Plane::Frontend, (**m).hdr.request);
      if ((**m).need_reply() || (info && info->has_own_reply())) owner_burst_ = false;
      if ((**m).hdr.request == static_cast<uint32_t>(vhu::FrontendReq::SET_OWNER) && !(**m).need_reply())
        owner_burst_ = true;
    }
    switch (backend_.handle(std::move(**m))) {
      case Disposition::Continue: break;
      case Disposition::Wait: paused_ = true; break;
      case Disposition::Close: drop_frontend("malformed message"); return;
    }
  }
  update_interest();
}

void Vm::send(vhu::Message&& reply) {
  if (!conn_) return;
  Out o;
  o.bytes.resize(sizeof(vhu::Header) + reply.payload.size());
  std::memcpy(o.bytes.data(), &reply.hdr, sizeof(vhu::Header));
  if (!reply.payload.empty())
    std::memcpy(o.bytes.data() + sizeof(vhu::Header), reply.payload.data(), reply.payload.size());
  o.fds = std::move(reply.fds);
  out_.push_back(std::move(o));
  flush();
}

void Vm::flush() {
  while (conn_ && !out_.empty()) {
    Out& o = out_.front();
    iovec iov{o.bytes.data() + o.off, o.bytes.size() - o.off};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * vhu::kMaxFds)] = {};
    if (o.off == 0 && !o.fds.empty() && o.fds.size() <= vhu::kMaxFds) {
      mh.msg_control = control;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * o.fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * o.fds.size());
      for (size_t i = 0; i < o.fds.size(); ++i) {
        const int f = o.fds[i].get();
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &f, sizeof f);
      }
    }
    const ssize_t n = ::sendmsg(conn_.get(), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      drop_frontend(fmt::format("sending a reply: {}", std::strerror(errno)));
      return;
    }
    o.off += static_cast<size_t>(n);
    if (o.off == o.bytes.size()) out_.pop_front();
  }
  update_interest();
}

void Vm::drop_frontend(const std::string& why) {
  if (!conn_) return;
  VLOG(Info, "{}: front-end connection closed: {}", name_, why);
  loop_.remove(conn_.get());
  conn_.reset();
  out_.clear();
  paused_ = false;
  backend_.disconnect();
  if (listen_) loop_.modify(listen_.get(), EPOLLIN);
  if (cfg_.client && !reconnect_timer_)
    reconnect_timer_ = loop_.add_timer(std::chrono::milliseconds(500), [this] { try_connect(); });
  if (cfg_.socket_fd >= 0 && !listen_) {
    VLOG(Info, "{}: the --fd socket was a connection; no other front-end can come", name_);
    if (on_done) on_done();
  }
}

}  // namespace vsockref
