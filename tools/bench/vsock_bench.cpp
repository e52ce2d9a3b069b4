// vsock-bench: stream throughput through a vhost-user vsock back-end, set
// against the bound of a bare Unix socketpair copy of the same write sizes.
//
// One thread plays QEMU's front-end and a Linux-like guest driver on libvhu's
// driver side; another plays the host program of hybrid vsock (the Unix
// sockets of Firecracker, cloud-hypervisor and vhost-device-vsock). Through
// the back-end every byte is copied twice, as in the bound: host-to-guest the
// host program copies into its socket and the back-end copies out of it into
// guest memory; guest-to-host the back-end copies guest memory into the
// socket and the host program copies out. The guest therefore never copies
// payload itself (its tx buffers are filled once, like zero-copy sends), and
// checks the stream position of each packet's first byte, not every byte.
//
// It is a benchmark, not a test: it exits non-zero only when a transfer
// cannot complete.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "group_cpu.h"
#include "vhu/channel.h"
#include "vhu/features.h"
#include "vhu/messages.h"
#include "vhu/virtqueue_driver.h"
#include "vhu/vsock.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace vs = vhu::vsock;
using vhu::FrontendReq;

// The back-end's process group, stopped on every way out.
volatile pid_t g_backend_group = -1;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vsock-bench: %s\n", what.c_str());
  if (g_backend_group > 0) ::kill(-g_backend_group, SIGTERM);
  std::exit(1);
}

extern "C" void on_signal(int sig) {
  if (g_backend_group > 0) ::kill(-g_backend_group, SIGTERM);
  ::_exit(128 + sig);
}

uint32_t rq(FrontendReq r) { return static_cast<uint32_t>(r); }

// Byte `o` of every stream is o % 251: a prime period, so a packet that is
// lost, repeated or reordered moves the bytes that follow off the pattern.
constexpr unsigned kPeriod = 251;
constexpr uint32_t kMaxPkt = 64 * 1024;  // Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n + kPeriod);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i % kPeriod);
  return v;
}

double mib_per_s(uint64_t bytes, Clock::duration d) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0) / std::chrono::duration<double>(d).count();
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads `total` bytes in reads of at most `chunk`; checks the pattern at the
// start of every read. Empty on success, else what went wrong.
std::string read_stream(int fd, uint64_t total, size_t chunk) {
  std::vector<uint8_t> buf(chunk);
  uint64_t got = 0;
  while (got < total) {
    const ssize_t r = ::read(fd, buf.data(), std::min<uint64_t>(chunk, total - got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return "stream ended after " + std::to_string(got) + " of " + std::to_string(total) + " bytes";
    if (buf[0] != got % kPeriod) return "wrong byte at stream offset " + std::to_string(got);
    got += static_cast<uint64_t>(r);
  }
  return {};
}

// ---- the bound: a bare Unix socketpair copy ----

double socketpair_copy(size_t write_size, uint64_t total) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair failed");
  const auto pat = pattern(write_size);
  const auto t0 = Clock::now();
  std::thread writer([&] {
    for (uint64_t sent = 0; sent < total; sent += write_size)
      if (!write_all(sv[0], pat.data() + sent % kPeriod, std::min<uint64_t>(write_size, total - sent))) break;
  });
  const std::string err = read_stream(sv[1], total, write_size);
  const auto t1 = Clock::now();
  writer.join();
  ::close(sv[0]);
  ::close(sv[1]);
  if (!err.empty()) die("socketpair: " + err);
  return mib_per_s(total, t1 - t0);
}

// ---- the back-end process ----

class Backend {
 public:
  Backend(const std::string& tmpl, uint64_t cid) {
    char d[] = "/tmp/vsock-bench.XXXXXX";
    if (!::mkdtemp(d)) die("mkdtemp failed");
    dir_ = d;
    socket = dir_ + "/vhost-user.sock";
    uds = dir_ + "/vsock.uds";
    command = tmpl;
    const std::pair<std::string, std::string> subst[] = {
        {"{socket}", socket}, {"{uds}", uds}, {"{cid}", std::to_string(cid)}};
    for (const auto& [key, value] : subst)
      for (size_t at; (at = command.find(key)) != std::string::npos;) command.replace(at, key.size(), value);
    pid_ = ::fork();
    if (pid_ < 0) die("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);  // so that the shell and what it starts are stopped together
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
    g_backend_group = pid_;
  }
  ~Backend() {
    if (pid_ > 0) {
      g_backend_group = -1;
      ::kill(-pid_, SIGTERM);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Connects to the back-end's socket once it listens (10 s at most).
  vhu::UniqueFd connect() {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    for (;;) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        die("the back-end exited before listening: " + command);
      }
      if (auto fd = vhu::connect_unix(socket)) return std::move(*fd);
      if (Clock::now() > deadline) die("nothing listens on " + socket + " after 10 s: " + command);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // The back-end's process group: the shell and what it started.
  pid_t group() const { return pid_; }
  std::string socket, uds, command;

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

// ---- guest RAM: one memfd region ----

// Its guest-physical address, the front-end virtual address announced and
// our own mapping all differ, as under QEMU.
struct GuestRam {
  static constexpr uint64_t kGpa = 0x40000000, kUva = 0x7f5500000000;
  explicit GuestRam(uint64_t bytes) : size(bytes) {
    fd = vhu::UniqueFd(::memfd_create("vsock-bench-ram", MFD_CLOEXEC));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) die("memfd failed");
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) die("mmap failed");
    local = static_cast<uint8_t*>(p);
  }
  ~GuestRam() { ::munmap(local, size); }
  uint64_t alloc(uint64_t n, uint64_t align = 64) {
    const uint64_t at = (next + align - 1) / align * align;
    if (at + n > size) die("guest RAM exhausted");
    next = at + n;
    return kGpa + at;
  }
  uint8_t* host(uint64_t gpa) const { return local + (gpa - kGpa); }
  uint64_t uva(uint64_t gpa) const { return kUva + (gpa - kGpa); }

  uint64_t size;
  vhu::UniqueFd fd;
  uint8_t* local = nullptr;
  uint64_t next = 0;
};

struct Options {
  std::string spawn;
  uint64_t mib = 256;
  unsigned runs = 3;
  std::vector<size_t> sizes{4096, 65536, 1u << 20};
  uint32_t queue_size = 256;
  // Linux's: VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE (4 KiB) of payload behind the
  // header (virtio_vsock_rx_fill, net/vmw_vsock/virtio_transport.c).
  uint32_t rx_buf = 4096 + vs::kHdrSize;
  uint32_t buf_alloc = 256 * 1024;  // Linux's default vsock buffer size
  uint64_t cid = 3;
  // How long an idle guest watches its used rings before it sleeps, as a KVM
  // vCPU polls before it halts (halt_poll_ns). 0: it sleeps at once.
  unsigned guest_poll_us = 0;
  std::string direction = "both";
};

// One stream connection as the guest sees it.
struct Conn {
  uint32_t local_port = 0, peer_port = 0;
  bool established = false, reset = false;
  uint32_t peer_buf_alloc = 0, peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;          // bytes sent
  uint32_t fwd_cnt = 0;         // bytes consumed
  uint32_t fwd_announced = 0;   // fwd_cnt the peer last heard of
  uint64_t received = 0;
  std::string error;
  uint32_t credit() const { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }
};

class Guest {
 public:
  Guest(vhu::UniqueFd sock, const Options& o)
      : o_(o),
        ram_(2 * vhu::DriverQueue::area_bytes(o.queue_size) + uint64_t{o.queue_size} * (o.rx_buf + 64) +
             uint64_t{o.queue_size / 2} * (kMaxPkt + kPeriod + 128) + (1u << 20)),
        chan_(std::move(sock), vhu::Plane::Frontend) {}

  // QEMU 7.2's start-up and DRIVER_OK sequences, rings 0 and 1 only (the
  // front-end keeps the event queue), kick fds handed over signalled.
  void start() {
    namespace f = vhu::feature;
    namespace pf = vhu::protocol_feature;
    const uint64_t offered = u64(call(vhu::Message::empty(rq(FrontendReq::GET_FEATURES))));
    if (!vhu::has_bit(offered, f::VERSION_1)) die("the back-end does not offer VERSION_1");
    uint64_t acked = offered & (vhu::bit(f::VERSION_1) | vhu::bit(f::RING_EVENT_IDX) |
                                vhu::bit(f::VHOST_USER_F_PROTOCOL_FEATURES) | vhu::bit(f::VSOCK_F_STREAM));
    if (vhu::has_bit(offered, f::VHOST_USER_F_PROTOCOL_FEATURES)) {
      const uint64_t pfs = u64(call(vhu::Message::empty(rq(FrontendReq::GET_PROTOCOL_FEATURES))));
      reply_ack_ = vhu::has_bit(pfs, pf::REPLY_ACK);
      send(vhu::Message::request_with(rq(FrontendReq::SET_PROTOCOL_FEATURES), pfs & vhu::bit(pf::REPLY_ACK)));
    }
    send(vhu::Message::empty(rq(FrontendReq::SET_OWNER)));
    event_idx_ = vhu::has_bit(acked, f::RING_EVENT_IDX);
    for (unsigned q = 0; q < 2; ++q) {
      call_[q] = vhu::UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      kick_[q] = vhu::UniqueFd(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
      auto m = vhu::Message::request_with(rq(FrontendReq::SET_VRING_CALL), uint64_t{q});
      m.fds.push_back(dup(call_[q].get()));
      send(std::move(m));
    }
    send(vhu::Message::request_with(rq(FrontendReq::SET_FEATURES), acked));
    vhu::MemoryTable t{};
    t.nregions = 1;
    t.regions[0] = vhu::MemoryRegion{GuestRam::kGpa, ram_.size, GuestRam::kUva, 0};
    auto mt = vhu::Message::empty(rq(FrontendReq::SET_MEM_TABLE), reply_ack_);
    mt.set_payload_bytes({reinterpret_cast<const uint8_t*>(&t), 8 + sizeof(vhu::MemoryRegion)});
    mt.fds.push_back(dup(ram_.fd.get()));
    acked_ok(std::move(mt), "SET_MEM_TABLE");

    vhu::DriverQueue* qs[2] = {&rxq_, &txq_};
    for (unsigned q = 0; q < 2; ++q) {
      const uint64_t gpa = ram_.alloc(vhu::DriverQueue::area_bytes(o_.queue_size), 4096);
      if (!qs[q]->init(ram_.host(gpa), gpa, o_.queue_size, event_idx_).ok()) die("DriverQueue::init failed");
      send(vhu::Message::request_with(rq(FrontendReq::SET_VRING_NUM), vhu::VringState{q, o_.queue_size}));
      send(vhu::Message::request_with(rq(FrontendReq::SET_VRING_BASE), vhu::VringState{q, 0}));
      send(vhu::Message::request_with(
          rq(FrontendReq::SET_VRING_ADDR),
          vhu::VringAddr{q, 0, ram_.uva(qs[q]->desc_gpa()), ram_.uva(qs[q]->used_gpa()), ram_.uva(qs[q]->avail_gpa()), 0}));
      auto k = vhu::Message::request_with(rq(FrontendReq::SET_VRING_KICK), uint64_t{q});
      k.fds.push_back(dup(kick_[q].get()));
      send(std::move(k));
    }
    // The driver fills rx before DRIVER_OK, as Linux does.
    rx_gpa_.assign(o_.queue_size, 0);
    for (uint32_t i = 0; i < o_.queue_size; ++i) post_rx(ram_.alloc(o_.rx_buf + 0ull, 64));
    rxq_.publish();
    rx_published_ = rxq_.avail_idx();
    tx_head_slot_.assign(o_.queue_size, -1);
    for (int s = 0; s < static_cast<int>(o_.queue_size / 2); ++s) {
      tx_hdr_.push_back(ram_.alloc(64, 64));
      tx_pay_.push_back(ram_.alloc(kMaxPkt + kPeriod, 64));
      const auto pat = pattern(kMaxPkt);
      std::memcpy(ram_.host(tx_pay_.back()), pat.data(), kMaxPkt + kPeriod);
      free_slots_.push_back(s);
    }
    if (vhu::has_bit(acked, f::VHOST_USER_F_PROTOCOL_FEATURES))
      for (unsigned q = 0; q < 2; ++q)
        acked_ok(vhu::Message::request_with(rq(FrontendReq::SET_VRING_ENABLE), vhu::VringState{q, 1}, reply_ack_),
                 "SET_VRING_ENABLE");
    // A request with a reply: everything before it has been handled.
    call(vhu::Message::empty(rq(FrontendReq::GET_FEATURES)));
    kick(0);
  }

  // Host writes `total` bytes in writes of `write_size` to the guest.
  double host_to_guest(const std::string& uds, size_t write_size, uint64_t total, bench::CpuMeter& cpu) {
    const uint32_t port = next_port_++;
    Clock::time_point t0;
    std::string host_err;
    std::atomic<bool> host_failed{false};
    std::thread host([&] {
      auto fail = [&](std::string why) {
        host_err = std::move(why);
        host_failed = true;
      };
      auto fd = vhu::connect_unix(uds);
      if (!fd) return fail("cannot connect to " + uds);
      const std::string line = "CONNECT " + std::to_string(port) + "\n";
      write_all(fd->get(), reinterpret_cast<const uint8_t*>(line.data()), line.size());
      std::string ok;
      char c;
      while (::read(fd->get(), &c, 1) == 1 && c != '\n') ok += c;
      if (ok.rfind("OK ", 0) != 0) return fail("no OK line after CONNECT: '" + ok + "'");
      const auto pat = pattern(write_size);
      cpu.start();
      t0 = Clock::now();
      for (uint64_t sent = 0; sent < total; sent += write_size)
        if (!write_all(fd->get(), pat.data() + sent % kPeriod, std::min<uint64_t>(write_size, total - sent)))
          return fail("write to the back-end's host socket failed");
      // Wait for the guest before closing, so that the tail is not cut.
      char x;
      while (::read(fd->get(), &x, 1) > 0) {}
    });
    conn_ = Conn{};
    conn_.local_port = port;
    run_until([&] { return conn_.established || host_failed; }, "host-initiated connection");
    run_until([&] { return conn_.received >= total || host_failed; }, "host-to-guest data");
    const auto t1 = Clock::now();
    cpu.stop();
    close_conn();
    host.join();
    if (!host_err.empty()) die(host_err);
    return mib_per_s(total, t1 - t0);
  }

  // The guest writes `total` bytes in writes of `write_size` to a host listener.
  double guest_to_host(const std::string& uds, size_t write_size, uint64_t total, bench::CpuMeter& cpu) {
    const uint32_t port = next_port_++;
    auto l = vhu::listen_unix(uds + "_" + std::to_string(port));
    if (!l) die("cannot listen on " + uds + "_" + std::to_string(port));
    Clock::time_point t1;
    std::string host_err;
    std::atomic<bool> host_done{false};
    std::thread host([&] {
      auto a = vhu::accept_unix(l->get(), 10000);
      if (!a) {
        host_err = "the back-end did not connect to " + uds + "_" + std::to_string(port);
      } else {
        host_err = read_stream(a->get(), total, write_size);
        t1 = Clock::now();
        cpu.stop();
      }
      host_done = true;
    });
    conn_ = Conn{};
    conn_.local_port = next_local_++;
    conn_.peer_port = port;
    queue_pkt(make_hdr(vs::Op::REQUEST, 0));
    flush_tx();
    run_until([&] { return conn_.established || host_done; }, "guest-initiated connection");
    cpu.start();
    const auto t0 = Clock::now();
    uint64_t sent = 0;
    while (sent < total && !host_done) {
      // A guest write is cut into packets of at most 64 KiB, each as large as
      // the peer's credit allows, as Linux does.
      bool queued = false;
      while (sent < total && conn_.credit() > 0 && !free_slots_.empty() && txq_.num_free() >= 2) {
        const uint64_t in_write = write_size - sent % write_size;
        const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>({in_write, kMaxPkt, conn_.credit()}));
        queue_pkt(make_hdr(vs::Op::RW, len), sent % kPeriod);
        conn_.tx_cnt += len;
        sent += len;
        queued = true;
      }
      if (queued) flush_tx();
      if (!queued) wait_events(true);
      poll_rx();
      reclaim_tx();
      if (conn_.reset) die("the back-end reset the guest-to-host connection: " + conn_.error);
    }
    const auto ts = Clock::now();
    while (!host_done) {
      if (Clock::now() - ts > std::chrono::seconds(20)) die("the host received too little after 20 s");
      wait_events(false);
      poll_rx();
      reclaim_tx();
    }
    host.join();
    if (!host_err.empty()) die("guest-to-host: " + host_err);
    close_conn();
    return mib_per_s(total, t1 - t0);
  }

 private:
  vhu::UniqueFd dup(int fd) { return vhu::UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }
  void send(const vhu::Message& m) {
    if (auto r = chan_.send(m); !r.ok()) die("sending " + vhu::describe(vhu::Plane::Frontend, m) + ": " + r.message());
  }
  vhu::Message call(const vhu::Message& m) {
    send(m);
    auto r = chan_.recv(5000);
    if (!r) die("no reply to " + vhu::describe(vhu::Plane::Frontend, m) + ": " + r.message());
    return std::move(*r);
  }
  uint64_t u64(const vhu::Message& reply) {
    auto v = vhu::payload_u64(vhu::Plane::Frontend, reply);
    if (!v) die("reply is not a u64: " + v.message());
    return *v;
  }
  void acked_ok(vhu::Message m, const char* what) {
    if (!reply_ack_) return send(m);
    if (u64(call(m)) != 0) die(std::string(what) + " refused by the back-end");
  }
  void kick(unsigned q) {
    const uint64_t one = 1;
    if (::write(kick_[q].get(), &one, sizeof one) != sizeof one) die("kick failed");
  }

  vs::Hdr make_hdr(vs::Op op, uint32_t len) {
    vs::Hdr h;
    h.src_cid = o_.cid;
    h.dst_cid = vs::kHostCid;
    h.src_port = conn_.local_port;
    h.dst_port = conn_.peer_port;
    h.len = len;
    h.type = vs::kTypeStream;
    h.op = static_cast<uint16_t>(op);
    h.buf_alloc = o_.buf_alloc;
    h.fwd_cnt = conn_.fwd_cnt;
    conn_.fwd_announced = conn_.fwd_cnt;
    return h;
  }

  void post_rx(uint64_t gpa) {
    const vhu::DriverBuffer b{gpa, o_.rx_buf, true};
    auto head = rxq_.add(std::span<const vhu::DriverBuffer>(&b, 1));
    if (!head) die("rx add: " + head.message());
    rx_gpa_[*head] = gpa;
  }

  // Queues a packet on tx (published by flush_tx); RW payload starts at
  // `phase` in a slot's pattern so that it continues the stream.
  void queue_pkt(const vs::Hdr& h, uint32_t phase = 0) {
    while (free_slots_.empty() || txq_.num_free() < 2) {
      flush_tx();
      if (!reclaim_tx()) wait_events(true);
    }
    const int s = free_slots_.back();
    free_slots_.pop_back();
    vs::encode(h, std::span<uint8_t, vs::kHdrSize>(ram_.host(tx_hdr_[s]), vs::kHdrSize));
    vhu::DriverBuffer b[2] = {{tx_hdr_[s], static_cast<uint32_t>(vs::kHdrSize), false},
                              {tx_pay_[s] + phase, h.len, false}};
    auto head = txq_.add(std::span<const vhu::DriverBuffer>(b, h.len ? 2 : 1));
    if (!head) die("tx add: " + head.message());
    tx_head_slot_[*head] = s;
  }
  void flush_tx() {
    if (txq_.avail_idx() == tx_published_) return;
    txq_.publish();
    if (txq_.needs_kick(tx_published_)) kick(1);
    tx_published_ = txq_.avail_idx();
  }
  bool reclaim_tx() {
    bool any = false;
    while (auto e = txq_.pop_used()) {
      if (e->id >= o_.queue_size || tx_head_slot_[e->id] < 0) die("tx used id " + std::to_string(e->id) + " is no buffer");
      free_slots_.push_back(tx_head_slot_[e->id]);
      tx_head_slot_[e->id] = -1;
      any = true;
    }
    return any;
  }

  // Takes every used rx buffer, handles it and gives it back.
  bool poll_rx() {
    bool any = false;
    while (auto e = rxq_.pop_used()) {
      any = true;
      if (e->id >= o_.queue_size || rx_gpa_[e->id] == 0) die("rx used id " + std::to_string(e->id) + " is no buffer");
      const uint64_t gpa = rx_gpa_[e->id];
      rx_gpa_[e->id] = 0;
      if (e->len >= vs::kHdrSize) {
        auto h = vs::decode(std::span<const uint8_t>(ram_.host(gpa), e->len));
        if (h) handle(*h, ram_.host(gpa) + vs::kHdrSize, e->len - vs::kHdrSize);
      }
      post_rx(gpa);
      // Each packet stands for one read by the application. Linux's
      // virtio_transport_stream_do_dequeue() tells the peer about freed
      // space after a read that leaves less than a packet's worth
      // (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE) of the buffer unannounced...
      const uint32_t unannounced = conn_.fwd_cnt - conn_.fwd_announced;
      if (conn_.established && unannounced && o_.buf_alloc - std::min(unannounced, o_.buf_alloc) < kMaxPkt)
        credit_update();
    }
    if (any) {
      rxq_.publish();
      if (rxq_.needs_kick(rx_published_)) kick(0);
      rx_published_ = rxq_.avail_idx();
      // ...or that drains its receive queue (fewer bytes than SO_RCVLOWAT, 1).
      if (conn_.established && conn_.fwd_cnt != conn_.fwd_announced) credit_update();
    }
    return any;
  }

  void credit_update() {
    queue_pkt(make_hdr(vs::Op::CREDIT_UPDATE, 0));
    flush_tx();
  }

  void handle(const vs::Hdr& h, const uint8_t* payload, uint32_t avail) {
    if (h.dst_port != conn_.local_port || (conn_.peer_port && h.src_port != conn_.peer_port)) return;  // an old one
    const auto op = static_cast<vs::Op>(h.op);
    conn_.peer_buf_alloc = h.buf_alloc;
    conn_.peer_fwd_cnt = h.fwd_cnt;
    switch (op) {
      case vs::Op::REQUEST:
        conn_.peer_port = h.src_port;
        conn_.established = true;
        queue_pkt(make_hdr(vs::Op::RESPONSE, 0));
        flush_tx();
        break;
      case vs::Op::RESPONSE:
        conn_.established = true;
        break;
      case vs::Op::RW:
        if (h.len > avail) die("RW packet longer than its used length");
        if (h.len && payload[0] != conn_.received % kPeriod)
          die("host-to-guest stream off its pattern at offset " + std::to_string(conn_.received));
        conn_.received += h.len;
        conn_.fwd_cnt += h.len;
        break;
      case vs::Op::CREDIT_REQUEST:
        credit_update();
        break;
      case vs::Op::RST:
        conn_.reset = true;
        conn_.error = "RST";
        break;
      default:
        break;
    }
  }

  // Sleeps until the device signals rx (or tx when `tx` is set). With
  // EVENT_IDX the used_event is moved only here, so a busy guest takes no
  // interrupts, as Linux's NAPI-like polling does.
  void wait_events(bool tx) {
    if (event_idx_) {
      rxq_.set_used_event(rxq_.last_used());
      if (tx) txq_.set_used_event(txq_.last_used());
    }
    const auto used = [&] {
      return rxq_.device_used_idx() != rxq_.last_used() || (tx && txq_.device_used_idx() != txq_.last_used());
    };
    const auto until = Clock::now() + std::chrono::microseconds(o_.guest_poll_us);
    do {
      if (used()) return;
    } while (Clock::now() < until);
    pollfd p[2] = {{call_[0].get(), POLLIN, 0}, {call_[1].get(), POLLIN, 0}};
    if (::poll(p, tx ? 2 : 1, 200) < 0 && errno != EINTR) die("poll failed");
    uint64_t v;
    for (unsigned q = 0; q < 2; ++q)
      if (::read(call_[q].get(), &v, sizeof v) < 0 && errno != EAGAIN) die("call fd read failed");
  }

  template <class Pred>
  void run_until(Pred done, const char* what) {
    auto last = Clock::now();
    while (!done()) {
      if (poll_rx() || reclaim_tx()) {
        last = Clock::now();
        continue;
      }
      if (conn_.reset) die(std::string(what) + ": reset by the back-end");
      if (Clock::now() - last > std::chrono::seconds(10)) die(std::string(what) + ": no progress for 10 s");
      wait_events(false);
    }
  }

  void close_conn() {
    queue_pkt(make_hdr(vs::Op::RST, 0));
    flush_tx();
    conn_.established = false;
  }

  const Options& o_;
  GuestRam ram_;
  vhu::Channel chan_;
  bool reply_ack_ = false, event_idx_ = false;
  uint16_t rx_published_ = 0, tx_published_ = 0;  // avail idx the device last saw
  vhu::UniqueFd call_[2], kick_[2];
  vhu::DriverQueue rxq_, txq_;
  std::vector<uint64_t> rx_gpa_;        // rx head -> buffer
  std::vector<int> tx_head_slot_;       // tx head -> slot
  std::vector<uint64_t> tx_hdr_, tx_pay_;
  std::vector<int> free_slots_;
  Conn conn_;
  uint32_t next_port_ = 5000, next_local_ = 40000;
};

std::string size_name(size_t n) {
  if (n % (1u << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

}  // namespace

// One figure: the best run's rate and the back-end's CPU use during it.
struct Figure {
  double mib_per_s = 0;
  std::optional<double> cpu;  // percent of one CPU; unknown without /proc
  void keep_best(const Figure& f) {
    if (f.mib_per_s > mib_per_s) *this = f;
  }
};

// One transfer, with the back-end group's CPU use over the same stretch.
template <typename Transfer>
Figure measure(const Backend& backend, Transfer transfer) {
  bench::CpuMeter cpu(backend.group());
  Figure f;
  f.mib_per_s = transfer(cpu);
  f.cpu = cpu.percent();
  return f;
}

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Stream throughput through a vhost-user vsock back-end, against a bare Unix socketpair copy"};
  app.add_option("--spawn", o.spawn,
                 "back-end command; {socket}, {uds} and {cid} are replaced by the vhost-user socket, the hybrid "
                 "vsock uds-path and the guest CID")
      ->required();
  app.add_option("--mib", o.mib, "MiB moved per measurement")->check(CLI::Range(1, 1 << 16));
  app.add_option("--runs", o.runs, "measurements per figure; the best is shown")->check(CLI::Range(1, 100));
  app.add_option("--sizes", o.sizes, "write sizes in bytes")->delimiter(',')->check(CLI::Range(1, 64 << 20));
  app.add_option("--queue-size", o.queue_size, "rx and tx queue size")->check(CLI::IsMember({64, 128, 256, 512, 1024}));
  app.add_option("--rx-buf-size", o.rx_buf, "bytes of each guest rx buffer, header included (Linux: 4096 + 44)")
      ->check(CLI::Range(static_cast<uint32_t>(vs::kHdrSize + 1), 1u << 20));
  app.add_option("--buf-alloc", o.buf_alloc, "the guest's receive buffer (buf_alloc)")->check(CLI::Range(4096, 1 << 30));
  app.add_option("--cid", o.cid, "guest CID")->check(CLI::Range(3, 0x7fffffff));
  app.add_option("--guest-poll-us", o.guest_poll_us,
                 "microseconds an idle guest polls its used rings before it sleeps on the call fds, as a KVM vCPU "
                 "polls before halting (halt_poll_ns); 0, the default, sleeps at once")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--direction", o.direction, "which transfers to measure (the bound is measured either way)")
      ->check(CLI::IsMember({"both", "host-to-guest", "guest-to-host"}));
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, on_signal);

  const uint64_t total = o.mib << 20;
  Backend backend(o.spawn, o.cid);
  Guest guest(backend.connect(), o);
  guest.start();

  std::printf("back-end: %s\n", o.spawn.c_str());
  std::printf("%llu MiB per figure, best of %u; guest: queue size %u, rx buffers %u bytes, buf_alloc %u, polls %u us\n",
              static_cast<unsigned long long>(o.mib), o.runs, o.queue_size, o.rx_buf, o.buf_alloc, o.guest_poll_us);
  const bool h2g_on = o.direction != "guest-to-host", g2h_on = o.direction != "host-to-guest";
  std::printf("cpu: the back-end's CPU time over the transfer's (100%% = one CPU busy throughout)\n");
  std::printf("%-10s %12s %16s %7s %5s %16s %7s %5s\n", "write", "bound MiB/s", "host->guest", "ratio", "cpu",
              "guest->host", "ratio", "cpu");
  auto column = [](bool on, const Figure& f, double bound) {
    if (!on) return fmt::format("{:>16} {:>7} {:>5}", "-", "-", "-");
    const std::string cpu = f.cpu ? fmt::format("{:.0f}%", *f.cpu) : "?";
    return fmt::format("{:16.0f} {:6.0f}% {:>5}", f.mib_per_s, 100 * f.mib_per_s / bound, cpu);
  };
  for (size_t s : o.sizes) {
    double bound = 0;
    Figure h2g, g2h;
    for (unsigned r = 0; r < o.runs; ++r) {
      bound = std::max(bound, socketpair_copy(s, total));
      if (h2g_on)
        h2g.keep_best(measure(backend, [&](bench::CpuMeter& m) { return guest.host_to_guest(backend.uds, s, total, m); }));
      if (g2h_on)
        g2h.keep_best(measure(backend, [&](bench::CpuMeter& m) { return guest.guest_to_host(backend.uds, s, total, m); }));
    }
    std::printf("%-10s %12.0f %s %s\n", size_name(s).c_str(), bound, column(h2g_on, h2g, bound).c_str(),
                column(g2h_on, g2h, bound).c_str());
    std::fflush(stdout);
  }
  return 0;
}
