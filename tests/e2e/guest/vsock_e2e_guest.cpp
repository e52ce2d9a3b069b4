// The guest side of the real-guest end-to-end test. Runs inside the test's
// initramfs (started by init.sh once the virtio and vsock modules are loaded),
// plays the guest end of each step of ../common/e2e_proto.h against host CID 2,
// and prints one line per step on the console:
//
//   E2E: PASS <step> <details>      or      E2E: FAIL <step> <reason>
//   E2E: RESULT PASS|FAIL
//
// Options come from the kernel command line (/proc/cmdline):
//   e2e.size=BYTES      bulk size each way (multiple of 64 KiB; default 64 MiB)
//   e2e.steps=LIST      comma-separated subset of g2h,h2g,many,seq,trickle,seqtrickle,reset (default all)
//   e2e.timeout=S       I/O timeout per socket operation (default 60)
//   e2e.poweroff=0|1    power off at the end (default 0: init.sh does it after its diagnostics)
//
// Built static with the host g++ (no sanitizers), so it needs nothing from the initramfs.
#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "e2e_proto.h"

namespace {

using e2e::Err;

struct Options {
  uint64_t size = e2e::kDefaultSize;
  std::string steps = "g2h,h2g,many,seq,trickle,seqtrickle,reset";
  int timeout = 60;
  bool poweroff = false;
};

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::string s = std::string("E2E: ") + line + "\n";
  (void)!::write(STDOUT_FILENO, s.data(), s.size());
}

Options parse_cmdline() {
  Options o;
  FILE* f = std::fopen("/proc/cmdline", "r");
  if (!f) return o;
  char buf[4096] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  char* save = nullptr;
  for (char* tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(nullptr, " \n", &save)) {
    if (!std::strncmp(tok, "e2e.size=", 9)) o.size = std::strtoull(tok + 9, nullptr, 0);
    else if (!std::strncmp(tok, "e2e.steps=", 10)) o.steps = tok + 10;
    else if (!std::strncmp(tok, "e2e.timeout=", 12)) o.timeout = std::atoi(tok + 12);
    else if (!std::strncmp(tok, "e2e.poweroff=", 13)) o.poweroff = std::atoi(tok + 13) != 0;
  }
  return o;
}

bool wants(const Options& o, const char* step) {
  const std::string list = "," + o.steps + ",";
  return list.find(std::string(",") + step + ",") != std::string::npos;
}

// Connects to host CID 2 `port`; retries a few times on the errors a device
// that is still coming up (or a listener not there yet) gives.
int vsock_connect(int type, uint32_t port, int timeout, Err& err, int attempts = 5) {
  for (int i = 0; i < attempts; ++i) {
    const int fd = ::socket(AF_VSOCK, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = e2e::errno_text("socket(AF_VSOCK)");
      return -1;
    }
    timeval ct{};  // connect timeout (the kernel's default is 2 s; a TCG guest is slow)
    ct.tv_sec = 10;
    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &ct, sizeof ct);
    sockaddr_vm a{};
    a.svm_family = AF_VSOCK;
    a.svm_cid = e2e::kHostCid;
    a.svm_port = port;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      e2e::set_timeouts(fd, timeout);
      return fd;
    }
    const int saved = errno;
    err = e2e::errno_text(("connect to 2:" + std::to_string(port)).c_str());
    ::close(fd);
    // A timed-out connect means the device did not answer for 10 s: retrying
    // only delays the verdict. Resets may come from a peer not listening yet.
    if (saved == ETIMEDOUT) break;
    if (i + 1 < attempts) ::usleep(500 * 1000);
  }
  return -1;
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

bool step_g2h(const Options& o) {
  const double t0 = e2e::now_s();
  Err err;
  const int fd = vsock_connect(SOCK_STREAM, e2e::kPortG2H, o.timeout, err);
  if (fd < 0) {
    say("FAIL g2h %s", err.c_str());
    return false;
  }
  Err e = e2e::send_bulk(fd, e2e::kSeedG2H, o.size);
  const double t1 = e2e::now_s();
  if (e.empty()) e = e2e::read_verdict(fd);
  if (e.empty()) e = e2e::finish(fd, o.timeout);
  ::close(fd);
  if (!e.empty()) {
    say("FAIL g2h %s", e.c_str());
    return false;
  }
  say("PASS g2h %.0f MiB guest-to-host in %.2f s (%.1f MiB/s), checksum confirmed by the host", mib(o.size), t1 - t0,
      mib(o.size) / (t1 - t0));
  return true;
}

int listen_h2g(Err& err) {
  const int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = e2e::errno_text("socket(AF_VSOCK)");
    return -1;
  }
  sockaddr_vm a{};
  a.svm_family = AF_VSOCK;
  a.svm_cid = VMADDR_CID_ANY;
  a.svm_port = e2e::kPortH2G;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) {
    err = e2e::errno_text("bind/listen on port 5002");
    ::close(fd);
    return -1;
  }
  return fd;
}

bool step_h2g(const Options& o, int lfd) {
  const double t0 = e2e::now_s();
  // The host starts h2g as soon as g2h is over (whatever its outcome).
  if (!e2e::wait_readable(lfd, o.timeout)) {
    say("FAIL h2g no host connection to port %u within %d s", e2e::kPortH2G, o.timeout);
    return false;
  }
  sockaddr_vm peer{};
  socklen_t pl = sizeof peer;
  const int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_CLOEXEC);
  if (fd < 0) {
    say("FAIL h2g %s", e2e::errno_text("accept").c_str());
    return false;
  }
  e2e::set_timeouts(fd, o.timeout);
  const double t1 = e2e::now_s();
  const Err result = e2e::recv_bulk(fd, e2e::kSeedH2G, o.size);
  const double t2 = e2e::now_s();
  const std::string v = e2e::verdict_line(result);
  Err e = e2e::write_all(fd, v.data(), v.size());
  if (e.empty()) e = e2e::finish(fd, o.timeout);
  ::close(fd);
  if (!result.empty()) {
    say("FAIL h2g %s", result.c_str());
    return false;
  }
  if (!e.empty()) {
    say("FAIL h2g data verified, but the verdict exchange failed: %s", e.c_str());
    return false;
  }
  say("PASS h2g %.0f MiB host-to-guest (from %u:%u) in %.2f s (%.1f MiB/s; %.2f s waiting for the host), data and "
      "checksum verified",
      mib(o.size), peer.svm_cid, peer.svm_port, t2 - t1, mib(o.size) / (t2 - t1), t1 - t0);
  return true;
}

bool step_many(const Options& o) {
  const double t0 = e2e::now_s();
  for (int i = 0; i < e2e::kManyCount; ++i) {
    Err err;
    const int fd = vsock_connect(SOCK_STREAM, e2e::kPortMany, o.timeout, err, 1);
    if (fd < 0) {
      say("FAIL many connection %d of %d: %s", i + 1, e2e::kManyCount, err.c_str());
      return false;
    }
    const std::string ping = "ping " + std::to_string(i) + "\n";
    std::string line;
    Err e = e2e::write_all(fd, ping.data(), ping.size());
    if (e.empty()) e = e2e::read_line(fd, line);
    if (e.empty() && line != "pong " + std::to_string(i)) e = "got '" + line + "'";
    ::close(fd);
    if (!e.empty()) {
      say("FAIL many connection %d of %d: %s", i + 1, e2e::kManyCount, e.c_str());
      return false;
    }
  }
  const double dt = e2e::now_s() - t0;
  say("PASS many %d connections in a row in %.2f s (%.1f ms each)", e2e::kManyCount, dt,
      dt * 1000.0 / e2e::kManyCount);
  return true;
}

bool step_trickle(const Options& o) {
  const double t0 = e2e::now_s();
  Err err;
  const int fd = vsock_connect(SOCK_STREAM, e2e::kPortTrickle, o.timeout, err);
  if (fd < 0) {
    say("FAIL trickle %s", err.c_str());
    return false;
  }
  ::sleep(e2e::kTrickleWaitS);  // the host writes meanwhile; nothing is read
  // A packet the kernel refused is lost for good: do not wait a minute for it.
  e2e::set_timeouts(fd, 20);
  const size_t n = e2e::kTrickleWrite * e2e::kTrickleWrites;
  std::vector<uint8_t> buf(n);
  size_t got = 0;
  Err e = e2e::read_full(fd, buf.data(), n, &got);
  for (size_t i = 0; i < got && e.empty(); ++i)
    if (buf[i] != e2e::trickle_byte(i)) e = "byte " + std::to_string(i) + " differs";
  const std::string v = e2e::verdict_line(e);
  Err sent = e2e::write_all(fd, v.data(), v.size());
  if (sent.empty()) sent = e2e::finish(fd, o.timeout);
  ::close(fd);
  if (!e.empty()) {
    say("FAIL trickle %s, after %zu of %zu bytes", e.c_str(), got, n);
    return false;
  }
  if (!sent.empty()) {
    say("FAIL trickle data verified, but the verdict exchange failed: %s", sent.c_str());
    return false;
  }
  say("PASS trickle %d writes of %zu bytes queued while the guest read nothing for %d s, then read intact, in %.2f s",
      e2e::kTrickleWrites, e2e::kTrickleWrite, e2e::kTrickleWaitS, e2e::now_s() - t0);
  return true;
}

// Reads the host's small messages only after they have queued up: each is a
// packet that ends a message, which Linux never merges, so a back-end that
// sends more than the guest may queue loses the connection here. Then the
// host half-closes; its end must leave the guest free to send (no RECEIVE
// in the SHUTDOWN, which would make this send fail with EPIPE).
bool step_seqtrickle(const Options& o) {
  const double t0 = e2e::now_s();
  Err err;
  const int fd = vsock_connect(SOCK_SEQPACKET, e2e::kPortSeqTrickle, o.timeout, err);
  if (fd < 0) {
    say("FAIL seqtrickle %s", err.c_str());
    return false;
  }
  ::sleep(e2e::kTrickleWaitS);  // the host sends meanwhile; nothing is read
  e2e::set_timeouts(fd, 20);
  std::vector<uint8_t> buf(2 * e2e::kTrickleWrite);
  std::string e;
  int got = 0;
  for (; got < e2e::kTrickleWrites && e.empty(); ++got) {
    e = e2e::recv_message(fd, buf, e2e::kTrickleWrite);
    if (e.empty())
      for (size_t j = 0; j < e2e::kTrickleWrite && e.empty(); ++j)
        if (buf[j] != e2e::trickle_byte(static_cast<size_t>(got) * e2e::kTrickleWrite + j))
          e = "content differs at byte " + std::to_string(j);
    if (!e.empty()) e = "message " + std::to_string(got) + ": " + e;
  }
  const std::string v = e2e::verdict_line(e);
  Err sent = ::send(fd, v.data(), v.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(v.size()) ? Err{}
                                                                                            : e2e::errno_text("send");
  if (sent.empty()) {
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r != 0) sent = r < 0 ? e2e::errno_text("recv waiting for the host's end") : "a message after the last";
  }
  if (sent.empty()) {
    const size_t n = sizeof e2e::kSeqAfterEnd - 1;
    if (::send(fd, e2e::kSeqAfterEnd, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n))
      sent = e2e::errno_text("send after the host's half-close");
  }
  if (sent.empty()) sent = e2e::finish(fd, o.timeout);
  ::close(fd);
  if (!e.empty()) {
    say("FAIL seqtrickle %s", e.c_str());
    return false;
  }
  if (!sent.empty()) {
    say("FAIL seqtrickle messages verified, but the verdict exchange failed: %s", sent.c_str());
    return false;
  }
  say("PASS seqtrickle %d SEQPACKET messages of %zu bytes queued while the guest read nothing for %d s, then read "
      "intact, in %.2f s",
      e2e::kTrickleWrites, e2e::kTrickleWrite, e2e::kTrickleWaitS, e2e::now_s() - t0);
  return true;
}

bool step_seq(const Options& o) {
  const double t0 = e2e::now_s();
  Err err;
  const int fd = vsock_connect(SOCK_SEQPACKET, e2e::kPortSeq, o.timeout, err);
  if (fd < 0) {
    say("FAIL seq %s", err.c_str());
    return false;
  }
  std::vector<uint8_t> buf(2 * e2e::kSeqMax);
  // All messages back to back, so the transport sees them queued together.
  for (size_t i = 0; i < e2e::kSeqCount; ++i) {
    const size_t n = e2e::kSeqSizes[i];
    for (size_t j = 0; j < n; ++j) buf[j] = e2e::seq_byte(0, i, j);
    const ssize_t r = ::send(fd, buf.data(), n, MSG_NOSIGNAL);
    if (r != static_cast<ssize_t>(n)) {
      say("FAIL seq send of message %zu (%zu bytes): %s", i, n,
          r < 0 ? e2e::errno_text("send").c_str() : ("short send " + std::to_string(r)).c_str());
      ::close(fd);
      return false;
    }
  }
  for (size_t i = 0; i < e2e::kSeqCount; ++i) {
    const size_t want = e2e::kSeqSizes[e2e::kSeqCount - 1 - i];
    std::string e = e2e::recv_message(fd, buf, want);
    if (e.empty())
      for (size_t j = 0; j < want; ++j)
        if (buf[j] != e2e::seq_byte(1, i, j)) {
          e = "content differs at byte " + std::to_string(j);
          break;
        }
    if (!e.empty()) {
      say("FAIL seq reply message %zu: %s", i, e.c_str());
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  say("PASS seq %zu SEQPACKET messages each way (1 B to 64 KiB), boundaries and content kept, in %.2f s",
      e2e::kSeqCount, e2e::now_s() - t0);
  return true;
}

unsigned int local_cid() {
  const int fd = ::open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  unsigned int cid = VMADDR_CID_ANY;
  if (fd >= 0) {
    if (::ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) cid = VMADDR_CID_ANY;
    ::close(fd);
  }
  return cid;
}

Err write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return e2e::errno_text(("open " + path).c_str());
  const ssize_t r = ::write(fd, text.data(), text.size());
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (r != static_cast<ssize_t>(text.size())) return e2e::errno_text(("write " + path).c_str());
  return {};
}

// One "<what>\n" -> "ack\n" exchange on a fresh connection to kPortReset.
int reset_exchange(const Options& o, const char* what, Err& err) {
  const int fd = vsock_connect(SOCK_STREAM, e2e::kPortReset, o.timeout, err, 3);
  if (fd < 0) return -1;
  const std::string msg = std::string(what) + "\n";
  std::string line;
  err = e2e::write_all(fd, msg.data(), msg.size());
  if (err.empty()) err = e2e::read_line(fd, line);
  if (err.empty() && line != "ack") err = "got '" + line + "', want 'ack'";
  if (!err.empty()) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The guest resets its own device: unbind and rebind the vsock driver
// (virtio reset, status 0, re-probe with freshly allocated rings).
bool step_reset(const Options& o) {
  const double t0 = e2e::now_s();
  const std::string drv = "/sys/bus/virtio/drivers/vmw_vsock_virtio_transport";
  std::string dev;
  if (DIR* d = ::opendir(drv.c_str())) {
    while (dirent* e = ::readdir(d))
      if (!std::strncmp(e->d_name, "virtio", 6)) dev = e->d_name;
    ::closedir(d);
  }
  if (dev.empty()) {
    say("FAIL reset no device bound to %s", drv.c_str());
    return false;
  }
  Err err;
  const int before = reset_exchange(o, "before reset", err);
  if (before < 0) {
    say("FAIL reset first connection (before the reset): %s", err.c_str());
    return false;
  }
  err = write_file(drv + "/unbind", dev);
  if (err.empty()) err = write_file(drv + "/bind", dev);
  if (!err.empty()) {
    ::close(before);
    say("FAIL reset %s", err.c_str());
    return false;
  }
  // The driver's removal reset the old socket in the guest: it must be dead.
  char c;
  const ssize_t r = ::recv(before, &c, 1, MSG_DONTWAIT);
  const int rerr = errno;
  ::close(before);
  if (r > 0) {
    say("FAIL reset the connection opened before the reset still delivers data");
    return false;
  }
  const unsigned int cid = local_cid();
  if (cid != 3 && cid != VMADDR_CID_ANY) say("note: guest CID after the reset is %u", cid);
  const int after = reset_exchange(o, "after reset", err);
  if (after < 0) {
    say("FAIL reset connection after the driver reset: %s", err.c_str());
    return false;
  }
  err = e2e::finish(after, o.timeout);
  ::close(after);
  if (!err.empty()) {
    say("FAIL reset closing the connection after the reset: %s", err.c_str());
    return false;
  }
  say("PASS reset driver unbind/bind of %s: old connection gone (%s), new connection works, CID %u, in %.2f s",
      dev.c_str(), r == 0 ? "EOF" : std::strerror(rerr), cid, e2e::now_s() - t0);
  return true;
}

void print_local_cid() {
  const int fd = ::open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  unsigned int cid = 0;
  if (fd >= 0 && ::ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) == 0)
    say(cid == VMADDR_CID_ANY ? "guest CID unset (%u): no virtio-vsock device bound" : "guest CID %u", cid);
  else say("could not read the local CID from /dev/vsock (%s)", std::strerror(errno));
  if (fd >= 0) ::close(fd);
}

}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  const Options o = parse_cmdline();
  if (o.size == 0 || o.size % e2e::kBlock != 0) {
    say("FAIL setup e2e.size=%llu is not a positive multiple of %zu", static_cast<unsigned long long>(o.size),
        e2e::kBlock);
    say("RESULT FAIL");
    return 1;
  }
  say("guest program start: size=%llu steps=%s timeout=%d", static_cast<unsigned long long>(o.size),
      o.steps.c_str(), o.timeout);
  print_local_cid();

  bool ok = true;
  // The listener for h2g exists from the start: the host may connect while g2h runs.
  Err err;
  const int lfd = wants(o, "h2g") ? listen_h2g(err) : -1;
  if (wants(o, "h2g") && lfd < 0) {
    say("FAIL h2g %s", err.c_str());
    ok = false;
  }
  if (wants(o, "g2h")) ok = step_g2h(o) && ok;
  if (lfd >= 0) {
    ok = step_h2g(o, lfd) && ok;
    ::close(lfd);
  }
  if (wants(o, "many")) ok = step_many(o) && ok;
  if (wants(o, "seq")) ok = step_seq(o) && ok;
  if (wants(o, "trickle")) ok = step_trickle(o) && ok;
  if (wants(o, "seqtrickle")) ok = step_seqtrickle(o) && ok;
  if (wants(o, "reset")) ok = step_reset(o) && ok;
  say("RESULT %s", ok ? "PASS" : "FAIL");
  if (o.poweroff) {
    ::sync();
    ::reboot(RB_POWER_OFF);
  }
  return ok ? 0 : 1;
}
