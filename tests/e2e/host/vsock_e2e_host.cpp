// The host side of the real-guest end-to-end test: plays the host end of every
// step of ../common/e2e_proto.h over the hybrid-vsock Unix sockets of a
// vhost-user vsock back-end (Firecracker / cloud-hypervisor / vhost-device-vsock
// convention):
//   - guest-to-host port P: listens on <uds>_P (SOCK_STREAM; SOCK_SEQPACKET for
//     the SEQPACKET step) and the back-end connects there;
//   - host-to-guest: connects to <uds>, writes "CONNECT <port>\n", reads a line
//     starting "OK ", then the byte stream.
//
// Usage: vsock-e2e-host --uds PATH [--size BYTES] [--timeout S] [--io-timeout S]
//                       [--steps g2h,h2g,many,seq,trickle,seqtrickle,reset]
// Prints "READY" once every listener exists, one "HOST: PASS|FAIL <step> ..."
// line per step, and exits 0 only when every step passed. --timeout bounds the
// whole run (the guest boots meanwhile); --io-timeout bounds each socket operation.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "e2e_proto.h"

namespace {

using e2e::Err;

struct Options {
  std::string uds;
  uint64_t size = e2e::kDefaultSize;
  int timeout = 240;
  int io_timeout = 60;
  std::string steps = "g2h,h2g,many,seq,trickle,seqtrickle,reset";
};

std::mutex g_out;
double g_t0 = 0;

void report(bool pass, const char* step, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void report(bool pass, const char* step, const char* fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::lock_guard<std::mutex> lock(g_out);
  std::printf("HOST: %s %s %s (t=%.2f s)\n", pass ? "PASS" : "FAIL", step, line, e2e::now_s() - g_t0);
  std::fflush(stdout);
}

void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char* fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::lock_guard<std::mutex> lock(g_out);
  std::printf("host: %s (t=%.2f s)\n", line, e2e::now_s() - g_t0);
  std::fflush(stdout);
}

bool wants(const Options& o, const char* step) {
  const std::string list = "," + o.steps + ",";
  return list.find(std::string(",") + step + ",") != std::string::npos;
}

sockaddr_un unix_addr(const std::string& path, Err& err) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) err = "socket path too long: " + path;
  else std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

int listen_unix(const std::string& path, int type, Err& err) {
  const sockaddr_un a = unix_addr(path, err);
  if (!err.empty()) return -1;
  ::unlink(path.c_str());
  const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0) {
    err = e2e::errno_text(("listen on " + path).c_str());
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

double deadline_left(double deadline) { return deadline - e2e::now_s(); }

// Accepts one connection before `deadline`; -1 with err set otherwise.
int accept_until(int lfd, double deadline, int io_timeout, Err& err) {
  const double left = deadline_left(deadline);
  if (left <= 0 || !e2e::wait_readable(lfd, left)) {
    err = "no connection from the back-end before the deadline";
    return -1;
  }
  const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    err = e2e::errno_text("accept");
    return -1;
  }
  e2e::set_timeouts(fd, io_timeout);
  return fd;
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

bool step_g2h(const Options& o, int lfd, double deadline) {
  Err err;
  const int fd = accept_until(lfd, deadline, o.io_timeout, err);
  if (fd < 0) {
    report(false, "g2h", "%s (listening on %s_%u)", err.c_str(), o.uds.c_str(), e2e::kPortG2H);
    return false;
  }
  const double t0 = e2e::now_s();
  const Err result = e2e::recv_bulk(fd, e2e::kSeedG2H, o.size);
  const double t1 = e2e::now_s();
  const std::string v = e2e::verdict_line(result);
  Err e = e2e::write_all(fd, v.data(), v.size());
  if (e.empty()) e = e2e::finish(fd, o.io_timeout);
  ::close(fd);
  if (!result.empty()) {
    report(false, "g2h", "%s", result.c_str());
    return false;
  }
  if (!e.empty()) {
    report(false, "g2h", "data verified, but the verdict exchange failed: %s", e.c_str());
    return false;
  }
  report(true, "g2h", "%.0f MiB received and verified in %.2f s (%.1f MiB/s)", mib(o.size), t1 - t0,
         mib(o.size) / (t1 - t0));
  return true;
}

// Host-to-guest: CONNECT until the guest accepts (it listens from the start of
// its program, so early attempts may be refused while it boots).
bool step_h2g(const Options& o, double deadline) {
  Err last = "never tried";
  int attempts = 0;
  int fd = -1;
  std::string okline;
  while (deadline_left(deadline) > 0) {
    ++attempts;
    Err err;
    const sockaddr_un a = unix_addr(o.uds, err);
    if (!err.empty()) {
      report(false, "h2g", "%s", err.c_str());
      return false;
    }
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    e2e::set_timeouts(fd, o.io_timeout);
    const std::string req = "CONNECT " + std::to_string(e2e::kPortH2G) + "\n";
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) last = e2e::errno_text("connect");
    else if (Err e = e2e::write_all(fd, req.data(), req.size()); !e.empty()) last = "CONNECT: " + e;
    else if (Err e2 = e2e::read_line(fd, okline); !e2.empty()) last = "reply to CONNECT: " + e2;
    else if (okline.rfind("OK ", 0) != 0) last = "reply to CONNECT is '" + okline + "', not 'OK <port>'";
    else break;
    ::close(fd);
    fd = -1;
    ::usleep(250 * 1000);
  }
  if (fd < 0) {
    report(false, "h2g", "no connection to guest port %u after %d attempts; last: %s", e2e::kPortH2G, attempts,
           last.c_str());
    return false;
  }
  note("h2g: connected after %d attempt(s), back-end said '%s'", attempts, okline.c_str());
  const double t0 = e2e::now_s();
  Err e = e2e::send_bulk(fd, e2e::kSeedH2G, o.size);
  const double t1 = e2e::now_s();
  if (e.empty()) e = e2e::read_verdict(fd);
  if (e.empty()) e = e2e::finish(fd, o.io_timeout);
  ::close(fd);
  if (!e.empty()) {
    report(false, "h2g", "%s", e.c_str());
    return false;
  }
  report(true, "h2g", "%.0f MiB sent in %.2f s (%.1f MiB/s), guest confirmed data and checksum", mib(o.size), t1 - t0,
         mib(o.size) / (t1 - t0));
  return true;
}

bool step_many(const Options& o, int lfd, double deadline) {
  double first = 0;
  for (int i = 0; i < e2e::kManyCount; ++i) {
    Err err;
    const int fd = accept_until(lfd, deadline, o.io_timeout, err);
    if (fd < 0) {
      report(false, "many", "connection %d of %d: %s", i + 1, e2e::kManyCount, err.c_str());
      return false;
    }
    if (i == 0) first = e2e::now_s();
    std::string line;
    const std::string want = "ping " + std::to_string(i);
    const std::string pong = "pong " + std::to_string(i) + "\n";
    Err e = e2e::read_line(fd, line);
    if (e.empty() && line != want) e = "got '" + line + "', want '" + want + "'";
    if (e.empty()) e = e2e::write_all(fd, pong.data(), pong.size());
    // The guest closes after reading the pong: the back-end must pass that on.
    if (e.empty()) e = e2e::finish(fd, 10);
    ::close(fd);
    if (!e.empty()) {
      report(false, "many", "connection %d of %d: %s", i + 1, e2e::kManyCount, e.c_str());
      return false;
    }
  }
  report(true, "many", "%d connections, each ping/pong and closed, in %.2f s", e2e::kManyCount,
         e2e::now_s() - first);
  return true;
}

bool step_trickle(const Options& o, int lfd, double deadline) {
  Err err;
  const int fd = accept_until(lfd, deadline, o.io_timeout, err);
  if (fd < 0) {
    report(false, "trickle", "%s", err.c_str());
    return false;
  }
  const double t0 = e2e::now_s();
  std::vector<uint8_t> chunk(e2e::kTrickleWrite);
  Err e;
  for (int i = 0; i < e2e::kTrickleWrites && e.empty(); ++i) {
    for (size_t j = 0; j < chunk.size(); ++j) chunk[j] = e2e::trickle_byte(i * chunk.size() + j);
    e = e2e::write_all(fd, chunk.data(), chunk.size());
    ::usleep(1000);  // each write reaches the back-end on its own
  }
  const double t1 = e2e::now_s();
  std::string line;
  if (e.empty()) e = e2e::read_line(fd, line);
  if (e.empty() && line != "OK") e = "the guest says '" + line + "'";
  if (e.empty()) e = e2e::finish(fd, 10);
  ::close(fd);
  if (!e.empty()) {
    report(false, "trickle", "%s", e.c_str());
    return false;
  }
  report(true, "trickle", "%d writes of %zu bytes in %.2f s, the guest read them intact", e2e::kTrickleWrites,
         e2e::kTrickleWrite, t1 - t0);
  return true;
}

bool step_seqtrickle(const Options& o, int lfd, double deadline) {
  Err err;
  const int fd = accept_until(lfd, deadline, o.io_timeout, err);
  if (fd < 0) {
    report(false, "seqtrickle", "%s (SOCK_SEQPACKET listener on %s_%u)", err.c_str(), o.uds.c_str(),
           e2e::kPortSeqTrickle);
    return false;
  }
  const double t0 = e2e::now_s();
  std::vector<uint8_t> msg(e2e::kTrickleWrite);
  Err e;
  for (int i = 0; i < e2e::kTrickleWrites && e.empty(); ++i) {
    for (size_t j = 0; j < msg.size(); ++j) msg[j] = e2e::trickle_byte(i * msg.size() + j);
    if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
      e = "message " + std::to_string(i) + ": " + e2e::errno_text("send");
    ::usleep(1000);  // each message reaches the back-end on its own
  }
  const double t1 = e2e::now_s();
  if (e.empty()) {
    // The verdict is one message: a one-byte read would drop the rest of it.
    e2e::set_timeouts(fd, o.io_timeout);
    char v[512];
    const ssize_t r = ::recv(fd, v, sizeof v, 0);
    if (r < 0) e = "verdict: " + e2e::errno_text("recv");
    else if (r == 0) e = "verdict: EOF (the guest's connection failed)";
    else if (std::string(v, static_cast<size_t>(r)) != "OK\n")
      e = "the guest says '" + std::string(v, static_cast<size_t>(r) - (v[r - 1] == '\n')) + "'";
  }
  if (e.empty()) {
    // Our half-close, then the guest's message sent after it saw our end.
    ::shutdown(fd, SHUT_WR);
    char m[64];
    const ssize_t r = ::recv(fd, m, sizeof m, 0);
    if (r < 0) e = "after our half-close: " + e2e::errno_text("recv");
    else if (r == 0) e = "after our half-close: EOF, not the guest's message (could it not send?)";
    else if (std::string(m, static_cast<size_t>(r)) != e2e::kSeqAfterEnd)
      e = "after our half-close: '" + std::string(m, static_cast<size_t>(r)) + "'";
  }
  if (e.empty()) e = e2e::finish(fd, 10);
  ::close(fd);
  if (!e.empty()) {
    report(false, "seqtrickle", "%s", e.c_str());
    return false;
  }
  report(true, "seqtrickle", "%d messages of %zu bytes in %.2f s, the guest read them intact", e2e::kTrickleWrites,
         e2e::kTrickleWrite, t1 - t0);
  return true;
}

bool step_seq(const Options& o, int lfd, double deadline) {
  Err err;
  const int fd = accept_until(lfd, deadline, o.io_timeout, err);
  if (fd < 0) {
    report(false, "seq", "%s (SOCK_SEQPACKET listener on %s_%u)", err.c_str(), o.uds.c_str(), e2e::kPortSeq);
    return false;
  }
  const double t0 = e2e::now_s();
  std::vector<uint8_t> buf(2 * e2e::kSeqMax);
  auto fail = [&](const std::string& why) {
    report(false, "seq", "%s", why.c_str());
    ::close(fd);
    return false;
  };
  for (size_t i = 0; i < e2e::kSeqCount; ++i) {
    const size_t want = e2e::kSeqSizes[i];
    if (Err e = e2e::recv_message(fd, buf, want); !e.empty()) return fail("message " + std::to_string(i) + ": " + e);
    for (size_t j = 0; j < want; ++j)
      if (buf[j] != e2e::seq_byte(0, i, j))
        return fail("message " + std::to_string(i) + ": content differs at byte " + std::to_string(j));
  }
  for (size_t i = 0; i < e2e::kSeqCount; ++i) {
    const size_t n = e2e::kSeqSizes[e2e::kSeqCount - 1 - i];
    for (size_t j = 0; j < n; ++j) buf[j] = e2e::seq_byte(1, i, j);
    const ssize_t r = ::send(fd, buf.data(), n, MSG_NOSIGNAL);
    if (r != static_cast<ssize_t>(n))
      return fail("reply " + std::to_string(i) + ": " + (r < 0 ? e2e::errno_text("send") : "short send"));
  }
  // The guest closes once it has every reply.
  char c;
  const ssize_t r = ::recv(fd, &c, 1, 0);
  if (r != 0) return fail(r < 0 ? e2e::errno_text("recv waiting for EOF") : "unexpected extra message");
  ::close(fd);
  report(true, "seq", "%zu messages each way with their boundaries, in %.2f s", e2e::kSeqCount, e2e::now_s() - t0);
  return true;
}

// One "<want>\n" -> "ack\n" exchange on the next connection to kPortReset.
int reset_accept(const Options& o, int lfd, double deadline, const char* want, Err& err) {
  const int fd = accept_until(lfd, deadline, o.io_timeout, err);
  if (fd < 0) return -1;
  std::string line;
  err = e2e::read_line(fd, line);
  if (err.empty() && line != want) err = "got '" + line + "', want '" + want + "'";
  if (err.empty()) err = e2e::write_all(fd, "ack\n", 4);
  if (!err.empty()) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool step_reset(const Options& o, int lfd, double deadline) {
  Err err;
  const int before = reset_accept(o, lfd, deadline, "before reset", err);
  if (before < 0) {
    report(false, "reset", "connection before the reset: %s", err.c_str());
    return false;
  }
  // The guest now resets its driver: the connection no longer exists in the
  // guest, so the back-end must end it here (EOF or a reset), not leave it open.
  const double t0 = e2e::now_s();
  err = e2e::finish(before, o.io_timeout);
  ::close(before);
  if (!err.empty()) {
    report(false, "reset", "connection opened before the guest's driver reset: %s", err.c_str());
    return false;
  }
  const double t_eof = e2e::now_s() - t0;
  const int after = reset_accept(o, lfd, deadline, "after reset", err);
  if (after < 0) {
    report(false, "reset", "connection after the reset: %s", err.c_str());
    return false;
  }
  err = e2e::finish(after, o.io_timeout);
  ::close(after);
  if (!err.empty()) {
    report(false, "reset", "connection after the reset: %s", err.c_str());
    return false;
  }
  report(true, "reset", "old connection ended %.2f s after its exchange, new connection works", t_eof);
  return true;
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "vsock-e2e-host: %s\nusage: vsock-e2e-host --uds PATH [--size BYTES] [--timeout S] [--io-timeout S] "
               "[--steps g2h,h2g,many,seq,trickle,seqtrickle,reset]\n",
               why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  g_t0 = e2e::now_s();
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--uds") o.uds = v;
    else if (a == "--size") o.size = std::strtoull(v, nullptr, 0);
    else if (a == "--timeout") o.timeout = std::atoi(v);
    else if (a == "--io-timeout") o.io_timeout = std::atoi(v);
    else if (a == "--steps") o.steps = v;
    else usage(("unknown option " + a).c_str());
  }
  if (o.uds.empty()) usage("--uds is required");
  if (o.size == 0 || o.size % e2e::kBlock != 0) usage("--size must be a positive multiple of 65536");

  const double deadline = g_t0 + o.timeout;
  struct L {
    const char* step;
    uint32_t port;
    int type;
    int fd = -1;
  } ls[] = {{"g2h", e2e::kPortG2H, SOCK_STREAM}, {"many", e2e::kPortMany, SOCK_STREAM}, {"seq", e2e::kPortSeq, SOCK_SEQPACKET},
                {"reset", e2e::kPortReset, SOCK_STREAM}, {"trickle", e2e::kPortTrickle, SOCK_STREAM},
                {"seqtrickle", e2e::kPortSeqTrickle, SOCK_SEQPACKET}};
  for (L& l : ls) {
    if (!wants(o, l.step)) continue;
    Err err;
    l.fd = listen_unix(o.uds + "_" + std::to_string(l.port), l.type, err);
    if (l.fd < 0) {
      std::fprintf(stderr, "vsock-e2e-host: %s\n", err.c_str());
      return 2;
    }
  }
  std::printf("READY\n");
  std::fflush(stdout);

  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  // g2h then h2g in one thread: the guest does them in that order, and the two
  // 64 MiB transfers then do not compete for the 2 cores.
  threads.emplace_back([&] {
    if (wants(o, "g2h") && !step_g2h(o, ls[0].fd, deadline)) ok = false;
    if (wants(o, "h2g") && !step_h2g(o, deadline)) ok = false;
  });
  if (ls[1].fd >= 0)
    threads.emplace_back([&] {
      if (!step_many(o, ls[1].fd, deadline)) ok = false;
    });
  if (ls[2].fd >= 0)
    threads.emplace_back([&] {
      if (!step_seq(o, ls[2].fd, deadline)) ok = false;
    });
  if (ls[3].fd >= 0)
    threads.emplace_back([&] {
      if (!step_reset(o, ls[3].fd, deadline)) ok = false;
    });
  if (ls[4].fd >= 0)
    threads.emplace_back([&] {
      if (!step_trickle(o, ls[4].fd, deadline)) ok = false;
    });
  if (ls[5].fd >= 0)
    threads.emplace_back([&] {
      if (!step_seqtrickle(o, ls[5].fd, deadline)) ok = false;
    });
  for (auto& t : threads) t.join();
  for (L& l : ls)
    if (l.fd >= 0) {
      ::close(l.fd);
      ::unlink((o.uds + "_" + std::to_string(l.port)).c_str());
    }
  std::printf("HOST: RESULT %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
