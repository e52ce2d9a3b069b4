#include "test_guest.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <stdexcept>

#include "backend.h"
#include "vhu/features.h"

namespace vsockref::test {

using namespace std::chrono_literals;
using vhu::FrontendReq;

namespace {
void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}
uint32_t id(FrontendReq r) { return static_cast<uint32_t>(r); }
vhu::UniqueFd eventfd_signalled(bool signalled) {
  vhu::UniqueFd fd(::eventfd(signalled ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK));
  return fd;
}
vhu::UniqueFd dup_fd(int fd) { return vhu::UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }
}  // namespace

// ---- GuestRam ----

GuestRam::GuestRam(uint64_t size0, uint64_t size1) {
  // Guest-physical, front-end virtual and our mapping all differ, and region
  // 1 starts 64 KiB into its file.
  regions[0] = Region{0x100000, size0, 0x7f1234500000, 0};
  regions[1] = Region{0x100000000, size1, 0x555500000000, 0x10000};
  for (Region& r : regions) {
    r.fd = ::memfd_create("guest-ram", MFD_CLOEXEC);
    check(r.fd >= 0 && ::ftruncate(r.fd, static_cast<off_t>(r.offset + r.size)) == 0, "memfd");
    void* p = ::mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, static_cast<off_t>(r.offset));
    check(p != MAP_FAILED, "mmap");
    r.local = static_cast<uint8_t*>(p);
  }
}

GuestRam::~GuestRam() {
  for (Region& r : regions) {
    if (r.local) ::munmap(r.local, r.size);
    if (r.fd >= 0) ::close(r.fd);
  }
}

uint64_t GuestRam::alloc(uint64_t bytes, uint64_t align, int ri) {
  Region& r = regions[ri];
  const uint64_t at = (r.next + align - 1) / align * align;
  check(at + bytes <= r.size, "guest RAM exhausted");
  r.next = at + bytes;
  return r.gpa + at;
}

uint8_t* GuestRam::host(uint64_t gpa) const {
  for (const Region& r : regions)
    if (gpa >= r.gpa && gpa < r.gpa + r.size) return r.local + (gpa - r.gpa);
  throw std::runtime_error("gpa outside guest RAM");
}

uint64_t GuestRam::uva(uint64_t gpa) const {
  for (const Region& r : regions)
    if (gpa >= r.gpa && gpa < r.gpa + r.size) return r.uva + (gpa - r.gpa);
  throw std::runtime_error("gpa outside guest RAM");
}

vhu::Message GuestRam::mem_table(bool need_reply) const {
  vhu::MemoryTable t{};
  t.nregions = 2;
  for (int i = 0; i < 2; ++i)
    t.regions[i] = vhu::MemoryRegion{regions[i].gpa, regions[i].size, regions[i].uva, regions[i].offset};
  vhu::Message m = vhu::Message::empty(id(FrontendReq::SET_MEM_TABLE), need_reply);
  m.set_payload_bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&t), 8 + 2 * sizeof(vhu::MemoryRegion)));
  for (const Region& r : regions) m.fds.push_back(dup_fd(r.fd));
  return m;
}

vhu::Message GuestRam::add_region(int i, bool need_reply) const {
  vhu::MemRegionMsg body{};
  body.region = vhu::MemoryRegion{regions[i].gpa, regions[i].size, regions[i].uva, regions[i].offset};
  vhu::Message m = vhu::Message::request_with(id(FrontendReq::ADD_MEM_REG), body, need_reply);
  m.fds.push_back(dup_fd(regions[i].fd));
  return m;
}

// ---- Guest ----

Guest::Guest(vhu::UniqueFd sock, uint64_t c) : chan(std::move(sock), vhu::Plane::Frontend), cid(c) {
  namespace f = vhu::feature;
  // What QEMU 7.2 with a Linux 6.1 guest acks (traces: 0x170000002).
  features = vhu::bit(f::VSOCK_F_SEQPACKET) | vhu::bit(f::RING_INDIRECT_DESC) | vhu::bit(f::RING_EVENT_IDX) |
             vhu::bit(f::VHOST_USER_F_PROTOCOL_FEATURES) | vhu::bit(f::VERSION_1);
  for (unsigned q = 0; q < 3; ++q) {
    call_fd[q] = eventfd_signalled(false);
    err_fd[q] = eventfd_signalled(false);
  }
}

vhu::Result<std::optional<vhu::Message>> Guest::request(vhu::Message m, bool expect_reply) {
  VHU_TRY(chan.send(m));
  if (!expect_reply) return std::optional<vhu::Message>{};
  auto r = chan.recv(3000);
  if (!r) return r.error();
  return std::optional<vhu::Message>{std::move(*r)};
}

uint64_t Guest::request_u64(vhu::Message m) {
  auto r = request(std::move(m), true);
  check(r.ok() && r->has_value(), "no reply: " + (r.ok() ? std::string("none") : r.message()));
  auto v = vhu::payload_u64(vhu::Plane::Frontend, **r);
  check(v.ok(), "reply is not a u64");
  return *v;
}

void Guest::send(vhu::Message m) { check(chan.send(m).ok(), "send"); }

void Guest::realize(uint64_t pf) {
  request_u64(vhu::Message::empty(id(FrontendReq::GET_FEATURES)));
  request_u64(vhu::Message::empty(id(FrontendReq::GET_PROTOCOL_FEATURES)));
  send(vhu::Message::request_with(id(FrontendReq::SET_PROTOCOL_FEATURES), pf));
  send(vhu::Message::empty(id(FrontendReq::SET_OWNER)));
  request_u64(vhu::Message::empty(id(FrontendReq::GET_FEATURES)));
  for (uint64_t q = 0; q < 2; ++q) {
    auto call = vhu::Message::request_with(id(FrontendReq::SET_VRING_CALL), q);
    call.fds.push_back(dup_fd(call_fd[q].get()));
    send(std::move(call));
    auto err = vhu::Message::request_with(id(FrontendReq::SET_VRING_ERR), q);
    err.fds.push_back(dup_fd(err_fd[q].get()));
    send(std::move(err));
  }
  if (vhu::has_bit(pf, vhu::protocol_feature::CONFIG)) {
    uint8_t zero[8] = {};
    auto r = request(vhu::make_config_message(id(FrontendReq::GET_CONFIG), vhu::ConfigHeader{0, 8, 0}, zero, false),
                     true);
    check(r.ok() && r->has_value(), "GET_CONFIG");
  }
}

void Guest::init_rings() {
  const bool event_idx = vhu::has_bit(features, vhu::feature::RING_EVENT_IDX);
  vhu::DriverQueue* qs[3] = {&rxq, &txq, &evq};
  for (unsigned q = 0; q < 3; ++q) {
    if (ring_gpa[q]) continue;
    ring_gpa[q] = ram.alloc(vhu::DriverQueue::area_bytes(kQueueSize), 4096, 0);
    check(qs[q]->init(ram.host(ring_gpa[q]), ring_gpa[q], kQueueSize, event_idx).ok(), "DriverQueue::init");
  }
}

void Guest::post_event(int n) {
  init_rings();
  for (int i = 0; i < n; ++i) {
    vhu::DriverBuffer b{ram.alloc(8, 8, 0), 8, true};
    check(evq.add(std::span<const vhu::DriverBuffer>(&b, 1)).ok(), "event add");
  }
  evq.publish();
  kick(2);
}

void Guest::setup_ring(unsigned q, vhu::DriverQueue& dq, uint16_t base) {
  init_rings();
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_NUM), vhu::VringState{q, kQueueSize}));
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_BASE), vhu::VringState{q, base}));
  vhu::VringAddr a{q, 0, ram.uva(dq.desc_gpa()), ram.uva(dq.used_gpa()), ram.uva(dq.avail_gpa()),
                   // QEMU fills in a log address even with the log flag clear.
                   dq.used_gpa() + 0x1234000};
  send(vhu::Message::request_with(id(FrontendReq::SET_VRING_ADDR), a));
  // The fd arrives already signalled, as QEMU hands it over.
  kick_fd[q] = eventfd_signalled(true);
  auto kick = vhu::Message::request_with(id(FrontendReq::SET_VRING_KICK), uint64_t{q});
  kick.fds.push_back(dup_fd(kick_fd[q].get()));
  send(std::move(kick));
}

void Guest::start(bool with_event, uint16_t base_rx, uint16_t base_tx) {
  const unsigned n = with_event ? 3 : 2;
  for (unsigned q = 0; q < n; ++q) {
    auto call = vhu::Message::request_with(id(FrontendReq::SET_VRING_CALL), uint64_t{q});
    call.fds.push_back(dup_fd(call_fd[q].get()));
    send(std::move(call));
  }
  send(vhu::Message::request_with(id(FrontendReq::SET_FEATURES), features));
  // QEMU's vhost_user_add_status: what GET_STATUS read, FEATURES_OK added,
  // written back only when it was not set already.
  const uint64_t status = request_u64(vhu::Message::empty(id(FrontendReq::GET_STATUS)));
  if (!(status & vhu::status::FEATURES_OK))
    send(vhu::Message::request_with(id(FrontendReq::SET_STATUS), status | vhu::status::FEATURES_OK));
  check(request_u64(ram.mem_table(true)) == 0, "SET_MEM_TABLE refused");
  setup_ring(0, rxq, base_rx);
  setup_ring(1, txq, base_tx);
  if (with_event) setup_ring(2, evq, 0);
  for (unsigned q = 0; q < n; ++q)
    check(request_u64(vhu::Message::request_with(id(FrontendReq::SET_VRING_ENABLE), vhu::VringState{q, 1}, true)) == 0,
          "SET_VRING_ENABLE");
  for (unsigned q = 0; q < n; ++q) {
    auto call = vhu::Message::request_with(id(FrontendReq::SET_VRING_CALL), uint64_t{q});
    call.fds.push_back(dup_fd(call_fd[q].get()));
    send(std::move(call));
  }
}

std::vector<uint16_t> Guest::stop(bool with_event) {
  const unsigned n = with_event ? 3 : 2;
  std::vector<uint16_t> bases;
  for (unsigned q = 0; q < n; ++q)
    send(vhu::Message::request_with(id(FrontendReq::SET_VRING_ENABLE), vhu::VringState{q, 0}));
  for (unsigned q = 0; q < n; ++q) {
    auto r = request(vhu::Message::request_with(id(FrontendReq::GET_VRING_BASE), vhu::VringState{q, 0}), true);
    check(r.ok() && r->has_value(), "GET_VRING_BASE");
    auto s = vhu::payload_vring_state(vhu::Plane::Frontend, **r);
    check(s.ok(), "GET_VRING_BASE reply");
    bases.push_back(static_cast<uint16_t>(s->num));
  }
  return bases;
}

void Guest::kick(unsigned q) {
  if (!kick_fd[q]) return;  // not handed over yet: the start sequence signals it
  const uint64_t one = 1;
  ssize_t r = ::write(kick_fd[q].get(), &one, sizeof one);
  (void)r;
}

void Guest::post_rx(int n, uint32_t size, bool split) {
  init_rings();
  for (int i = 0; i < n; ++i) {
    if (split) {
      const uint64_t h = ram.alloc(vhu::vsock::kHdrSize, 16, 0);
      const uint64_t p = ram.alloc(size - vhu::vsock::kHdrSize, 64, 1);
      vhu::DriverBuffer b[2] = {{h, static_cast<uint32_t>(vhu::vsock::kHdrSize), true},
                                {p, size - static_cast<uint32_t>(vhu::vsock::kHdrSize), true}};
      auto head = rxq.add(b);
      check(head.ok(), "rx add");
      rx_bufs_.push_back({*head, h, b[0].len});
      rx_bufs_.push_back({*head, p, b[1].len});
    } else {
      const uint64_t g = ram.alloc(size, 64, i % 2);
      vhu::DriverBuffer b{g, size, true};
      auto head = rxq.add(std::span<const vhu::DriverBuffer>(&b, 1));
      check(head.ok(), "rx add");
      rx_bufs_.push_back({*head, g, size});
    }
  }
  rxq.publish();
  kick(0);
}

vhu::vsock::Hdr Guest::hdr(uint64_t dst_cid, uint32_t src_port, uint32_t dst_port, vhu::vsock::Op op,
                           uint32_t len) const {
  vhu::vsock::Hdr h;
  h.src_cid = cid;
  h.dst_cid = dst_cid;
  h.src_port = src_port;
  h.dst_port = dst_port;
  h.len = len;
  h.type = type;
  h.op = static_cast<uint16_t>(op);
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

int Guest::reap_tx() {
  int n = 0;
  while (txq.pop_used()) ++n;
  return n;
}

void Guest::send_pkt(const vhu::vsock::Hdr& h, const std::vector<uint8_t>& payload) {
  init_rings();
  reap_tx();
  // Header in region 0, payload in region 1: a chain across both regions.
  const uint64_t hg = ram.alloc(vhu::vsock::kHdrSize, 16, 0);
  const auto bytes = vhu::vsock::encode(h);
  std::memcpy(ram.host(hg), bytes.data(), bytes.size());
  std::vector<vhu::DriverBuffer> bufs{{hg, static_cast<uint32_t>(vhu::vsock::kHdrSize), false}};
  if (!payload.empty()) {
    const uint64_t pg = ram.alloc(payload.size(), 64, 1);
    std::memcpy(ram.host(pg), payload.data(), payload.size());
    bufs.push_back({pg, static_cast<uint32_t>(payload.size()), false});
  }
  auto head = txq.add(bufs);
  check(head.ok(), "tx add: " + (head.ok() ? std::string() : head.message()));
  txq.publish();
  kick(1);
}

void Guest::repost_rx(uint16_t used_id, const std::vector<vhu::DriverBuffer>& bufs) {
  std::erase_if(rx_bufs_, [&](const RxPart& r) { return r.head == used_id; });
  auto head = rxq.add(bufs);
  check(head.ok(), "rx re-add");
  for (const auto& b : bufs) rx_bufs_.push_back({*head, b.gpa, b.len});
  rxq.publish();
  kick(0);
}

std::optional<Packet> Guest::recv_pkt(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto e = rxq.pop_used()) {
      std::vector<uint64_t> gpas;
      std::vector<vhu::DriverBuffer> bufs;  // to recycle the buffer exactly as it was
      uint64_t size = 0;
      for (const RxPart& r : rx_bufs_) {
        if (r.head != e->id) continue;
        gpas.push_back(r.gpa);
        bufs.push_back({r.gpa, r.len, true});
        size += r.len;
      }
      check(!gpas.empty(), "used id is no rx buffer");
      check(e->len <= size, "used length " + std::to_string(e->len) + " beyond the rx buffer's " +
                                std::to_string(size) + " bytes");
      if (e->len == 0) {
        // Returned empty (too small for a packet); Linux drops such a buffer.
        ++rx_returned_empty;
        repost_rx(static_cast<uint16_t>(e->id), bufs);
        continue;
      }
      std::vector<uint8_t> all(e->len);
      if (gpas.size() == 1) {
        std::memcpy(all.data(), ram.host(gpas[0]), e->len);
      } else {
        const size_t h = std::min<size_t>(e->len, vhu::vsock::kHdrSize);
        std::memcpy(all.data(), ram.host(gpas[0]), h);
        if (e->len > h) std::memcpy(all.data() + h, ram.host(gpas[1]), e->len - h);
      }
      repost_rx(static_cast<uint16_t>(e->id), bufs);
      auto h = vhu::vsock::decode(all);
      check(h.ok(), "rx packet shorter than a header");
      Packet p{*h, std::vector<uint8_t>(all.begin() + vhu::vsock::kHdrSize, all.end())};
      if (p.hdr.op == static_cast<uint16_t>(vhu::vsock::Op::RW)) fwd_cnt += p.hdr.len;
      return p;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    pollfd pfd{call_fd[0].get(), POLLIN, 0};
    ::poll(&pfd, 1, 5);
    uint64_t v;
    ssize_t r = ::read(call_fd[0].get(), &v, sizeof v);
    (void)r;
  }
}

std::optional<uint32_t> Guest::recv_event(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto e = evq.pop_used()) {
      // Event buffers are allocated by the test and sit at known gpas: the
      // first 4 bytes of the region the test handed over.
      return e->len;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(2ms);
  }
}

// ---- Harness ----

Harness::Harness(VmConfig c) : cfg(std::move(c)) {
  char tmpl[] = "/tmp/vsockref-test.XXXXXX";
  check(::mkdtemp(tmpl) != nullptr, "mkdtemp");
  dir = tmpl;
  if (cfg.uds_path.empty()) cfg.uds_path = dir + "/u";
  auto pair = vhu::socket_pair();
  check(pair.ok(), "socketpair");
  vm = std::make_unique<Vm>(loop, cfg, &router);
  check(vm->start_host_side().ok(), "host side");
  vm->serve(std::move(pair->second));
  guest = std::make_unique<Guest>(std::move(pair->first), cfg.guest_cid);
  thread = std::thread([this] { loop.run(); });
}

Harness::~Harness() {
  loop.stop();
  if (thread.joinable()) thread.join();
  guest.reset();
  vm.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

void Harness::on_loop(const std::function<void()>& fn) {
  std::promise<void> done;
  loop.post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

// ---- host side ----

vhu::UniqueFd host_connect(const std::string& uds, uint32_t port) {
  auto fd = vhu::connect_unix(uds);
  check(fd.ok(), "connect " + uds);
  const std::string line = "CONNECT " + std::to_string(port) + "\n";
  check(write_all(fd->get(), reinterpret_cast<const uint8_t*>(line.data()), line.size()), "write CONNECT");
  return std::move(*fd);
}

std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  char c;
  while (read_some(fd, reinterpret_cast<uint8_t*>(&c), 1, timeout) == 1) {
    out += c;
    if (c == '\n') break;
  }
  return out;
}

vhu::UniqueFd listen_port(const std::string& uds, uint32_t port) {
  auto l = vhu::listen_unix(uds + "_" + std::to_string(port));
  check(l.ok(), "listen");
  return std::move(*l);
}

vhu::UniqueFd accept_one(int listen_fd, std::chrono::milliseconds timeout) {
  auto a = vhu::accept_unix(listen_fd, static_cast<int>(timeout.count()));
  if (!a) return {};
  return std::move(*a);
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      pollfd pfd{fd, POLLOUT, 0};
      ::poll(&pfd, 1, 100);
      continue;
    }
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

size_t read_some(int fd, uint8_t* p, size_t n, std::chrono::milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return 0;
  const ssize_t r = ::recv(fd, p, n, MSG_DONTWAIT);
  return r > 0 ? static_cast<size_t>(r) : 0;
}

}  // namespace vsockref::test
