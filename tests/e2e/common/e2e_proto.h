// What the guest program (guest/vsock_e2e_guest.cpp) and the host peer
// (host/vsock_e2e_host.cpp) agree on: ports, the bulk-stream framing, the
// pseudo-random data both sides can regenerate, the checksum, the SEQPACKET
// message plan, and small blocking-I/O helpers. Header-only and libc-only so
// the guest side links statically with nothing else.
//
// Steps (guest point of view; host CID 2):
//   g2h  guest connects to port kPortG2H, sends a bulk stream, reads a verdict line
//   h2g  host sends CONNECT kPortH2G over uds-path, sends a bulk stream, reads a verdict line
//   many guest opens kManyCount connections in a row to kPortMany: "ping i\n" -> "pong i\n"
//   seq  guest SOCK_SEQPACKET to kPortSeq: kSeqSizes messages each way, boundaries checked
//   trickle guest opens a connection to kPortTrickle and reads nothing for kTrickleWaitS s
//        while the host writes kTrickleWrites x kTrickleWrite bytes, one write a millisecond;
//        then it reads them all and answers "OK\n" or "BAD <reason>\n". Linux refuses a
//        packet once (queued + 1) * SKB_TRUESIZE(0) > buf_alloc (since 6.12.92 and the
//        stable kernels of that fix): a back-end that sends each small write as a packet of
//        its own, up to the byte credit, lost the connection, until Linux learnt to merge
//        queued stream packets ("vsock/virtio: collapse receive queue under memory
//        pressure", 2026); the Debian 6.12 kernel here has both
//   seqtrickle the same over SOCK_SEQPACKET to kPortSeqTrickle, kTrickleWrites messages of
//        kTrickleWrite bytes: Linux does not merge a packet that ends a message (EOM), so
//        there the packet limit still holds, and a back-end that meters bytes only loses
//        the connection (the guest's read fails) with any kernel that has the limit; after
//        its verdict the host half-closes, and the guest, once it reads that end, sends
//        kSeqAfterEnd: a Linux guest told RECEIVE with the host's end fails that send
//   reset guest opens a connection to kPortReset ("before reset" -> "ack"), resets its
//        vsock driver (sysfs unbind + bind: a virtio device reset), then connects again
//        ("after reset" -> "ack"); the host must see the first connection end (EOF)
//
// Bulk stream: u64 kStreamMagic, u64 length (a multiple of kBlock), `length`
// bytes of Prng(seed) output, u64 checksum of those bytes. The receiver answers
// "OK\n" or "BAD <reason>\n", then the sender half-closes and both wait for EOF.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace e2e {

inline constexpr uint32_t kHostCid = 2;
inline constexpr uint32_t kPortG2H = 5001;
inline constexpr uint32_t kPortH2G = 5002;
inline constexpr uint32_t kPortMany = 5003;
inline constexpr uint32_t kPortSeq = 5004;
inline constexpr uint32_t kPortReset = 5005;
inline constexpr uint32_t kPortTrickle = 5006;
inline constexpr uint32_t kPortSeqTrickle = 5007;

inline constexpr uint64_t kStreamMagic = 0x314d525453453245ull;  // "E2ESTRM1" little-endian
inline constexpr uint64_t kSeedG2H = 0x6a09e667f3bcc908ull;
inline constexpr uint64_t kSeedH2G = 0xbb67ae8584caa73bull;
inline constexpr size_t kBlock = 64 * 1024;
inline constexpr uint64_t kDefaultSize = 64ull * 1024 * 1024;
inline constexpr int kManyCount = 100;

// SEQPACKET plan: the guest sends these sizes back to back, the host receives
// each as one message, then answers with the same sizes in reverse order. None
// exceeds 64 KiB, the smallest buf_alloc a back-end commonly offers (Linux
// refuses a SEQPACKET send larger than the peer's buf_alloc).
inline constexpr size_t kSeqSizes[] = {1, 2, 17, 512, 4095, 4096, 4097, 30000, 65536, 3};
inline constexpr size_t kSeqCount = sizeof(kSeqSizes) / sizeof(kSeqSizes[0]);
inline constexpr size_t kSeqMax = 65536;

// Above Linux's GOOD_COPY_LEN (128), below which it merges a packet into the
// one before; 600 packets are more than 256 KiB / 576 (455), yet 180,000
// bytes are within the 256 KiB credit.
inline constexpr size_t kTrickleWrite = 300;
inline constexpr int kTrickleWrites = 600;
inline constexpr int kTrickleWaitS = 2;
inline constexpr char kSeqAfterEnd[] = "after your end\n";
inline uint8_t trickle_byte(size_t i) { return static_cast<uint8_t>((i * 131) ^ (i >> 9)); }

// Byte j of SEQPACKET message i in direction dir (0 = guest to host, 1 = back).
inline uint8_t seq_byte(int dir, size_t i, size_t j) {
  return static_cast<uint8_t>((i * 37u + j * 13u + (j >> 8) + static_cast<size_t>(dir) * 101u) & 0xffu);
}

// xorshift64*: fast in a TCG guest, deterministic, and block-addressable so a
// receiver can name the first differing offset.
class Prng {
 public:
  explicit Prng(uint64_t seed) : s_(seed ? seed : 1) {}
  uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545f4914f6cdd1dull;
  }
  // n must be a multiple of 8.
  void fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t v = next();
      std::memcpy(p + i, &v, 8);
    }
  }

 private:
  uint64_t s_;
};

// A 64-bit word-wise checksum (multiply-rotate mix over little-endian words).
class Checksum {
 public:
  void update(const uint8_t* p, size_t n) {  // n multiple of 8
    for (size_t i = 0; i < n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h_ ^= w;
      h_ = (h_ << 31) | (h_ >> 33);
      h_ *= 0x9e3779b97f4a7c15ull;
    }
    n_ += n;
  }
  uint64_t value() const { return h_ ^ n_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
  uint64_t n_ = 0;
};

inline double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Errors are strings; an empty string is success.
using Err = std::string;

inline Err errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

inline void set_timeouts(int fd, int seconds) {
  timeval tv{};
  tv.tv_sec = seconds;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline Err write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return "send: timed out";
      return errno_text("send");
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return {};
}

// Reads exactly n bytes; `got` (if given) receives how many arrived.
inline Err read_full(int fd, void* data, size_t n, size_t* got = nullptr) {
  auto* p = static_cast<uint8_t*>(data);
  size_t done = 0;
  Err e;
  while (done < n) {
    const ssize_t r = ::recv(fd, p + done, n - done, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      e = (errno == EAGAIN || errno == EWOULDBLOCK) ? Err("recv: timed out") : errno_text("recv");
      break;
    }
    if (r == 0) {
      e = "unexpected EOF";
      break;
    }
    done += static_cast<size_t>(r);
  }
  if (got) *got = done;
  return e;
}

// Reads one line (without the '\n'), one byte at a time so nothing after it is consumed.
// Receives one SEQPACKET message into `buf` (larger than `want`, so a longer
// message shows) and checks that it came whole with `want` bytes.
inline Err recv_message(int fd, std::vector<uint8_t>& buf, size_t want) {
  iovec iov{buf.data(), buf.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  const ssize_t r = ::recvmsg(fd, &m, 0);
  if (r < 0) return errno_text("recvmsg");
  if (r == 0) return "EOF";
  if (m.msg_flags & MSG_TRUNC) return "MSG_TRUNC set";
  if (static_cast<size_t>(r) != want)
    return std::to_string(r) + " bytes, want " + std::to_string(want) + " (boundaries lost)";
  return {};
}

inline Err read_line(int fd, std::string& line, size_t max = 256) {
  line.clear();
  for (;;) {
    char c;
    const ssize_t r = ::recv(fd, &c, 1, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return "recv: timed out waiting for a line";
      return errno_text("recv");
    }
    if (r == 0) return line.empty() ? Err("EOF before a line") : Err("EOF in the middle of a line: '" + line + "'");
    if (c == '\n') return {};
    line.push_back(c);
    if (line.size() > max) return "line too long";
  }
}

// After our last byte: half-close, then wait for the peer's EOF (discarding
// anything else) so the peer has read everything before we close.
inline Err finish(int fd, int seconds) {
  ::shutdown(fd, SHUT_WR);
  const double deadline = now_s() + seconds;
  char buf[512];
  for (;;) {
    const double left = deadline - now_s();
    if (left <= 0) return "no EOF from the peer within " + std::to_string(seconds) + " s";
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return {};
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) return {};  // a reset after our data was read is a close
      return errno_text("recv while waiting for EOF");
    }
  }
}

// Waits up to `seconds` for a listening socket to become readable.
inline bool wait_readable(int fd, double seconds) {
  const double deadline = now_s() + seconds;
  for (;;) {
    const double left = deadline - now_s();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// Sends a bulk stream of `size` bytes from Prng(seed). Returns the error or "".
inline Err send_bulk(int fd, uint64_t seed, uint64_t size) {
  const uint64_t hdr[2] = {kStreamMagic, size};
  if (Err e = write_all(fd, hdr, sizeof hdr); !e.empty()) return "header: " + e;
  std::vector<uint8_t> block(kBlock);
  uint8_t* buf = block.data();
  Prng g(seed);
  Checksum sum;
  for (uint64_t off = 0; off < size; off += kBlock) {
    g.fill(buf, kBlock);
    sum.update(buf, kBlock);
    if (Err e = write_all(fd, buf, kBlock); !e.empty()) return "data at offset " + std::to_string(off) + ": " + e;
  }
  const uint64_t c = sum.value();
  if (Err e = write_all(fd, &c, sizeof c); !e.empty()) return "checksum: " + e;
  return {};
}

// Receives and checks a bulk stream: the header, every byte against Prng(seed)
// (first difference named), and the trailing checksum.
inline Err recv_bulk(int fd, uint64_t seed, uint64_t expect_size) {
  uint64_t hdr[2];
  if (Err e = read_full(fd, hdr, sizeof hdr); !e.empty()) return "header: " + e;
  if (hdr[0] != kStreamMagic) {
    char m[96];
    std::snprintf(m, sizeof m, "bad magic 0x%016llx", static_cast<unsigned long long>(hdr[0]));
    return m;
  }
  if (hdr[1] != expect_size)
    return "length " + std::to_string(hdr[1]) + " announced, " + std::to_string(expect_size) + " expected";
  std::vector<uint8_t> blocks(2 * kBlock);
  uint8_t* buf = blocks.data();
  uint8_t* want = buf + kBlock;
  Prng g(seed);
  Checksum sum;
  Err mismatch;
  for (uint64_t off = 0; off < expect_size; off += kBlock) {
    size_t got = 0;
    if (Err e = read_full(fd, buf, kBlock, &got); !e.empty())
      return "data: " + e + " after " + std::to_string(off + got) + " of " + std::to_string(expect_size) + " bytes";
    g.fill(want, kBlock);
    sum.update(buf, kBlock);
    if (mismatch.empty() && std::memcmp(buf, want, kBlock) != 0) {
      size_t i = 0;
      while (buf[i] == want[i]) ++i;
      char m[128];
      std::snprintf(m, sizeof m, "data differs from offset %llu (got 0x%02x, want 0x%02x)",
                    static_cast<unsigned long long>(off + i), buf[i], want[i]);
      mismatch = m;
    }
  }
  uint64_t c = 0;
  if (Err e = read_full(fd, &c, sizeof c); !e.empty()) return "checksum: " + e;
  if (!mismatch.empty()) return mismatch;
  if (c != sum.value()) {
    char m[128];
    std::snprintf(m, sizeof m, "checksum 0x%016llx sent, 0x%016llx computed", static_cast<unsigned long long>(c),
                  static_cast<unsigned long long>(sum.value()));
    return m;
  }
  return {};
}

// The receiver's verdict line for a bulk result.
inline std::string verdict_line(const Err& e) { return e.empty() ? std::string("OK\n") : "BAD " + e + "\n"; }

// Reads the verdict line; "" when it says OK.
inline Err read_verdict(int fd) {
  std::string line;
  if (Err e = read_line(fd, line, 512); !e.empty()) return "verdict: " + e;
  if (line == "OK") return {};
  return "peer says: " + line;
}

}  // namespace e2e
