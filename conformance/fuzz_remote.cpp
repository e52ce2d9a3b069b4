#include "fuzz_remote.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>

#include "frontend.h"
#include "fuzz_mutate.h"
#include "msglog.h"
#include "vhu/fuzz_fds.h"
#include "vhu/fuzz_framing.h"

namespace conform::fuzz {

namespace fr = vhu::fuzz::framing;
namespace fs = std::filesystem;
using vhu::FrontendReq;
using vhu::Message;
using vhu::UniqueFd;

namespace {

enum class Kind { None, Crash, Unanswered, Hang, Unreachable };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "none";
    case Kind::Crash: return "crash";
    case Kind::Unanswered: return "unanswered";
    case Kind::Hang: return "hang";
    case Kind::Unreachable: return "unreachable";
  }
  return "?";
}

struct Verdict {
  Kind kind = Kind::None;
  std::string what;       // what was detected, for a person
  std::string signature;  // two findings with the same one are the same bug
  std::string log;        // the last messages exchanged
  std::string stderr_tail;
};

int ms_left(Clock::time_point end) {
  return static_cast<int>(
      std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count()));
}

// The first line of a sanitizer report in `text`, without the "==pid=="
// prefix and addresses, which differ from run to run; empty when none.
std::string sanitizer_line(const std::string& text) {
  static constexpr const char* kMarks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "ERROR: ThreadSanitizer",
                                           "WARNING: ThreadSanitizer", "ERROR: MemorySanitizer", "runtime error:"};
  size_t at = std::string::npos;
  for (const char* m : kMarks) at = std::min(at, text.find(m));
  if (at == std::string::npos) return {};
  size_t begin = text.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  if (text.compare(begin, 2, "==") == 0) begin = at;  // "==1234==ERROR: ..."
  std::string line = text.substr(begin, text.find('\n', at) - begin);
  for (const char* cut : {" on address", " at pc", " (pc "})
    if (size_t c = line.find(cut); c != std::string::npos) line.resize(c);
  return line;
}

std::string last_lines(const std::string& text, size_t n) {
  if (text.empty()) return text;
  size_t pos = text.size();
  for (size_t i = 0; i <= n && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

// Whether a message is one the back-end must answer, and why. A message the
// back-end may refuse to parse (bad header, size or fds) never must: closing
// the connection on it is as good as an answer, and so may be ignoring it.
class Negotiation {
 public:
  explicit Negotiation(vhu::SpecText spec) : spec_(spec) {}

  std::optional<uint64_t> offered_features, offered_protocol;
  // The protocol features the back-end took, when that is certain: the last
  // SET_PROTOCOL_FEATURES was well formed, acked only bits it offered, and
  // was not refused. Anything else leaves it unknown, and a request that
  // depends on it need not be answered (a back-end may refuse the whole set
  // or take part of it).
  std::optional<uint64_t> acked_protocol;

  bool protocol(unsigned bit) const { return acked_protocol && vhu::has_bit(*acked_protocol, bit); }

  // Empty: need not be answered.
  std::string must_answer(const Message& m) const {
    if ((m.hdr.flags & ~vhu::kFlagNeedReply) != vhu::kVersion) return {};
    const vhu::RequestInfo* info = vhu::request_info(vhu::Plane::Frontend, m.hdr.request);
    if (!info || !well_formed(*info, m)) return {};
    // A request only the newer text defines is unknown to a back-end written
    // to the upstream one, which may drop it.
    if (info->text == vhu::SpecText::Newest && spec_ != vhu::SpecText::Newest) return {};
    namespace pf = vhu::protocol_feature;
    auto own = [&](bool gate, const char* why) { return gate ? std::string(why) : std::string(); };
    std::string reason;
    switch (static_cast<FrontendReq>(m.hdr.request)) {
      case FrontendReq::GET_FEATURES: reason = "it has a reply of its own"; break;
      case FrontendReq::GET_VRING_BASE: reason = "it has a reply of its own"; break;
      case FrontendReq::GET_PROTOCOL_FEATURES:
        reason = own(offered_features && vhu::has_bit(*offered_features, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES),
                     "it has a reply of its own and GET_FEATURES offered VHOST_USER_F_PROTOCOL_FEATURES");
        break;
      case FrontendReq::GET_QUEUE_NUM: reason = own(protocol(pf::MQ), "it has a reply of its own (MQ negotiated)"); break;
      case FrontendReq::SET_LOG_BASE:
        reason = own(protocol(pf::LOG_SHMFD), "it has a reply of its own (LOG_SHMFD negotiated)");
        break;
      case FrontendReq::GET_CONFIG: reason = own(protocol(pf::CONFIG), "it has a reply of its own (CONFIG negotiated)"); break;
      case FrontendReq::GET_INFLIGHT_FD:
        reason = own(protocol(pf::INFLIGHT_SHMFD), "it has a reply of its own (INFLIGHT_SHMFD negotiated)");
        break;
      case FrontendReq::GET_MAX_MEM_SLOTS:
        reason = own(protocol(pf::CONFIGURE_MEM_SLOTS), "it has a reply of its own (CONFIGURE_MEM_SLOTS negotiated)");
        break;
      case FrontendReq::GET_STATUS: reason = own(protocol(pf::STATUS), "it has a reply of its own (STATUS negotiated)"); break;
      case FrontendReq::GET_SHARED_OBJECT:
        reason = own(protocol(pf::SHARED_OBJECT), "it has a reply of its own (SHARED_OBJECT negotiated)");
        break;
      case FrontendReq::SET_DEVICE_STATE_FD:
      case FrontendReq::CHECK_DEVICE_STATE:
        reason = own(protocol(pf::DEVICE_STATE), "it has a reply of its own (DEVICE_STATE negotiated)");
        break;
      default: break;
    }
    if (reason.empty() && m.need_reply() && protocol(pf::REPLY_ACK))
      reason = fmt::format("need_reply is set and REPLY_ACK was negotiated (protocol features {:#x} offered and acked)",
                           *acked_protocol);
    return reason;
  }

  // What the exchange tells about the back-end and what we agreed.
  void sent(const Message& m) {
    if (m.hdr.request != static_cast<uint32_t>(FrontendReq::SET_PROTOCOL_FEATURES)) return;
    acked_protocol.reset();
    if ((m.hdr.flags & ~vhu::kFlagNeedReply) != vhu::kVersion || !m.fds.empty() || !offered_protocol) return;
    if (auto v = vhu::payload_u64(vhu::Plane::Frontend, m); v && (*v & ~*offered_protocol) == 0) acked_protocol = *v;
  }
  void received(const Message& r) {
    if (!r.is_reply() || !r.fds.empty()) return;
    auto v = vhu::payload_u64(vhu::Plane::Frontend, r);
    if (!v) return;
    if (r.hdr.request == static_cast<uint32_t>(FrontendReq::GET_FEATURES)) offered_features = *v;
    if (r.hdr.request == static_cast<uint32_t>(FrontendReq::GET_PROTOCOL_FEATURES)) offered_protocol = *v;
    if (r.hdr.request == static_cast<uint32_t>(FrontendReq::SET_PROTOCOL_FEATURES) && *v != 0) acked_protocol.reset();
  }

 private:
  vhu::SpecText spec_;

  static bool well_formed(const vhu::RequestInfo& info, const Message& m) {
    if (!vhu::check_fd_count(vhu::Plane::Frontend, m)) return false;
    if (auto n = vhu::fixed_payload_size(info.request)) return m.payload.size() == *n;
    switch (info.request) {
      case vhu::PayloadKind::Config: return vhu::payload_config(m).ok();
      case vhu::PayloadKind::MemoryTable: return vhu::payload_memory_table(m).ok();
      default: return false;
    }
  }
};

// The back-end under test; with --spawn a fresh one whenever the last ended
// or a finding may have left it in a state the next input should not see.
class Target {
 public:
  explicit Target(const Options& o) : opt_(o) {}

  vhu::Result<Backend*> get() {
    if (b_ && b_->spawned() && !b_->alive()) b_.reset();
    if (!b_) {
      auto l = Backend::launch(opt_.target, opt_.target.cid, opt_.listen_fd);
      if (!l) return l.error();
      b_ = std::move(*l);
    }
    return b_.get();
  }
  void fresh() {
    if (b_ && b_->spawned()) b_.reset();
  }
  bool restartable() const { return opt_.target.mode == TargetMode::Spawn; }

 private:
  const Options& opt_;
  std::unique_ptr<Backend> b_;
};

// One input, record by record, over as many sessions as it asks for, then
// the liveness probe.
class Exec {
 public:
  Exec(const Options& o, Backend& b) : opt_(o), b_(b), log_(16), neg_(o.spec) {}

  Verdict run(const Input& in) {
    mark_ = b_.stderr_mark();
    if (!open_session(opt_.target.start_timeout_ms)) {
      if (b_.spawned() && !b_.alive()) {
        died();
      } else {
        v_.kind = Kind::Unreachable;
        v_.what = connect_error_;
      }
    }
    for (size_t i = 0; i < in.size() && fe_ && v_.kind == Kind::None; ++i) {
      step(in[i], i);
      service();
    }
    // Settled before hanging up: the back-end has then handled every message
    // and kick, so what the input's last records do happens on every run,
    // not only when the hang-up comes late.
    ending_ = true;
    settle();
    linger();
    fe_.reset();
    state_write_.reset();
    state_read_.reset();
    if (v_.kind == Kind::None) health();
    if (v_.kind != Kind::None) {
      v_.log = log_.render();
      if (b_.spawned()) v_.stderr_tail = last_lines(b_.stderr_since(mark_), 40);
    }
    return std::move(v_);
  }

 private:
  bool open_session(int timeout_ms) {
    fe_.reset();
    neg_.acked_protocol.reset();
    out_of_step_ = false;
    ++sessions_;
    replies_ = 0;
    auto c = b_.connect(timeout_ms);
    if (!c) {
      connect_error_ = c.message();
      return false;
    }
    fe_ = std::make_unique<Frontend>(std::move(*c), log_, Clock::now() + std::chrono::hours(24));
    return true;
  }

  // The back-end hung up or we did: the next record starts a new session, as
  // a front-end that reconnects. One that serves a single connection ends here.
  void reconnect() {
    if (ending_) {
      fe_.reset();
      return;
    }
    log_.record_text(Dir::ToBackend, "(new connection)");
    (void)open_session(opt_.probe_ms);
  }

  void step(const Record& r, size_t idx) {
    if (r.hdr.request >= fr::kActionBase) {
      action(r);
      return;
    }
    Message m;
    m.hdr.request = r.hdr.request;
    m.hdr.flags = r.hdr.flags;
    m.set_payload_bytes(r.payload);
    const size_t n = vhu::fuzz::fd_count(r.hdr, m);
    for (size_t i = 0; i < n; ++i) m.fds.push_back(make_fd(m, i, r.hdr.aux));
    // Once raw bytes cut a message short, where one message ends is the
    // back-end's guess: nothing can be required of it but framing.
    const std::string must = out_of_step_ ? std::string{} : neg_.must_answer(m);
    // A front-end asks for the verdict once it has written the whole state.
    if (m.hdr.request == static_cast<uint32_t>(FrontendReq::CHECK_DEVICE_STATE)) state_write_.reset();
    if (!fe_->try_send(m, fmt::format("record {}", idx))) {
      reconnect();
      return;
    }
    neg_.sent(m);
    if (must.empty()) {
      drain();
    } else {
      await(m, fmt::format("record {}", idx), must);
    }
    if (!m.fds.empty() && m.hdr.request == static_cast<uint32_t>(FrontendReq::SET_VRING_KICK) &&
        (r.hdr.aux & fr::kAuxSignal))
      settle();
  }

  // A kick races the messages after it: the back-end sees the eventfd and
  // the socket in whatever order its poll reports them, and a reader that
  // drains the socket before polling again may read on past the kick. A
  // round trip, a pause that lets such a reader run dry, and a second round
  // trip settle it on any back-end whose loop gets the CPU in that pause,
  // so an input does the same thing on every run and a finding replays.
  void settle() {
    if (!fe_ || v_.kind != Kind::None || out_of_step_) return;
    sync();
    ::usleep(2000);
    if (fe_ && v_.kind == Kind::None) sync();
  }

  void sync() {
    const Message m = Message::empty(static_cast<uint32_t>(FrontendReq::GET_FEATURES));
    if (!fe_->try_send(m, ending_ ? "end of input" : "settling a kick")) return reconnect();
    await(m, ending_ ? "sent after the input's last record" : "sent after a kick", "it has a reply of its own");
  }

  void await(const Message& m, const std::string& where, const std::string& why) {
    const auto end = Clock::now() + std::chrono::milliseconds(opt_.reply_ms);
    // A save's reader gives up after a while, as a front-end does, so a
    // back-end that waits for the reader before answering CHECK_DEVICE_STATE
    // gets its EPIPE instead of our silence.
    const auto give_up_reading = Clock::now() + std::chrono::milliseconds(opt_.reply_ms / 4);
    for (;;) {
      service();
      if (state_read_ && Clock::now() >= give_up_reading) state_read_.reset();
      pollfd p{fe_->fd(), POLLIN, 0};
      const int left = ms_left(end);
      const int ready = ::poll(&p, 1, std::min(left, 10));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) {
        if (left > 0) continue;
        // A connection made after a hang-up that got no reply at all may be
        // one the back-end never took: then it does not serve, which is
        // what to report, not the one request.
        if (sessions_ > 1 && replies_ == 0) {
          // One that serves a connection at a time takes the probe only
          // once this one is gone.
          fe_.reset();
          if (std::string why = not_serving(); !why.empty())
            return hang("after the front-end reconnected the back-end no longer serves: " + why);
          if (v_.kind != Kind::None) return;
        }
        v_.kind = Kind::Unanswered;
        v_.what = fmt::format(
            "{} ({}) got no reply within {} ms and the connection stayed open; it must be answered: {}.",
            vhu::describe(vhu::Plane::Frontend, m), where, opt_.reply_ms, why);
        v_.signature = fmt::format("unanswered {}{}", vhu::request_name(vhu::Plane::Frontend, m.hdr.request),
                                   why.starts_with("need_reply") ? " need_reply" : "");
        return;
      }
      auto r = fe_->try_recv(std::max(left, 100));
      if (!r) {
        reconnect();
        return;
      }
      ++replies_;
      neg_.received(*r);
      if (r->is_reply() && r->hdr.request == m.hdr.request) return;
    }
  }

  // Out of step there is no reply to wait for; before hanging up, read what
  // comes until the back-end falls quiet, so the close lands where the input
  // put it (inside a message, say) rather than on replies left unread, which
  // the kernel turns into a reset.
  void linger() {
    if (fe_ && out_of_step_) (void)read_unasked(20);
  }

  // Replies nobody waits for (an ack the back-end sends unasked, say) are
  // read as they come, so the socket never fills and a close is noticed.
  void drain() {
    if (!read_unasked(0)) reconnect();
  }

  // Reads replies until none comes within quiet_ms; false once the
  // connection is closed or garbled.
  bool read_unasked(int quiet_ms) {
    for (;;) {
      pollfd p{fe_->fd(), POLLIN, 0};
      const int ready = ::poll(&p, 1, quiet_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return true;
      auto r = fe_->try_recv(opt_.reply_ms);
      if (!r) return false;
      ++replies_;
      neg_.received(*r);
    }
  }

  UniqueFd make_fd(const Message& m, size_t i, uint8_t aux) {
    const vhu::fuzz::FdPlan p = vhu::fuzz::plan_fd(m, i, aux);
    switch (p.kind) {
      case vhu::fuzz::FdKind::Memfd: {
        UniqueFd fd(::memfd_create("vuc-fuzz-region", MFD_CLOEXEC));
        if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(p.memfd_bytes)) != 0)
          throw std::runtime_error(fmt::format("memory file of {} bytes: {}", p.memfd_bytes, std::strerror(errno)));
        regions_.emplace_back(UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3)), p.memfd_bytes);
        if (regions_.size() > vhu::fuzz::kPokeRegions) regions_.erase(regions_.begin());
        return fd;
      }
      case vhu::fuzz::FdKind::StatePipe: {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
        // Load: the back-end reads what kActionStatePipe writes. Save: we drain.
        state_write_.reset();
        state_read_.reset();
        if (p.load) {
          state_write_.reset(fds[1]);
          return UniqueFd(fds[0]);
        }
        state_read_.reset(fds[0]);
        return UniqueFd(fds[1]);
      }
      case vhu::fuzz::FdKind::HungUpPipe: {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
        ::close(fds[1]);
        return UniqueFd(fds[0]);
      }
      case vhu::fuzz::FdKind::RegularFile: {
        UniqueFd fd(::memfd_create("vuc-fuzz-not-an-eventfd", MFD_CLOEXEC));
        if (!fd.valid()) throw std::runtime_error(fmt::format("memfd_create: {}", std::strerror(errno)));
        return fd;
      }
      case vhu::fuzz::FdKind::Eventfd:
        break;
    }
    UniqueFd fd(::eventfd((aux & fr::kAuxSignal) ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
    if (p.kick_ring) kicks_[*p.kick_ring] = UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
    return fd;
  }

  void action(const Record& r) {
    const auto& p = r.payload;
    auto take_u64 = [&](size_t bytes) {
      uint64_t v = 0;
      if (!p.empty()) std::memcpy(&v, p.data(), std::min(p.size(), bytes));
      return v;
    };
    switch (r.hdr.request) {
      case fr::kActionKick: {
        auto it = kicks_.find(static_cast<uint8_t>(take_u64(4)));
        if (it != kicks_.end()) {
          const uint64_t one = 1;
          (void)!::write(it->second.get(), &one, sizeof one);
          settle();
        }
        break;
      }
      case fr::kActionPoke: {
        if (regions_.empty()) break;
        auto& [fd, bytes] = regions_[r.hdr.flags % regions_.size()];
        const uint64_t off = take_u64(8) % bytes;
        const size_t data = p.size() > 8 ? p.size() - 8 : 0;
        const size_t n = static_cast<size_t>(std::min<uint64_t>(data, bytes - off));
        if (n) (void)!::pwrite(fd.get(), p.data() + 8, n, static_cast<off_t>(off));
        break;
      }
      case fr::kActionStatePipe:
        if (!state_write_) break;
        if (!p.empty()) (void)!::write(state_write_.get(), p.data(), p.size());
        if (r.hdr.flags & 1) state_write_.reset();
        break;
      case fr::kActionDisconnect:
        linger();
        fe_.reset();
        reconnect();
        break;
      case fr::kActionRaw: {
        std::vector<UniqueFd> owned;
        std::vector<int> fds;
        for (size_t i = 0, n = vhu::fuzz::named_fd_count(r.hdr); i < n; ++i) {
          owned.push_back(make_fd(Message{}, i, r.hdr.aux));
          fds.push_back(owned.back().get());
        }
        log_.record_text(Dir::ToBackend, fmt::format("({} raw bytes, {} fds)", p.size(), fds.size()));
        out_of_step_ = true;
        if (!fe_->channel().send_raw(p, fds)) return reconnect();
        drain();
        break;
      }
      default:
        break;
    }
  }

  // What a front-end does meanwhile: read the state a save writes.
  void service() {
    if (!state_read_) return;
    uint8_t buf[4096];
    ssize_t n;
    while ((n = ::read(state_read_.get(), buf, sizeof buf)) > 0) {
    }
    if (n == 0) state_read_.reset();
  }

  // A spawned back-end ended: a finding unless it exited cleanly (some serve
  // one connection and exit 0 when it closes).
  void died() {
    b_.wait_stderr_closed(2000);
    const std::string status = b_.status_text();
    const std::string san = sanitizer_line(b_.stderr_since(mark_));
    const bool exited = status.starts_with("exited with status ");
    if (san.empty() && exited && (status == "exited with status 0" || opt_.exit_is_answer)) return;
    v_.kind = Kind::Crash;
    v_.what = fmt::format("the back-end ended: {}{}", status, san.empty() ? "" : "; its stderr has: " + san);
    v_.signature = fmt::format("crash {} {}", status, san);
  }

  // Still alive and serving: a fresh connection answers GET_FEATURES.
  void health() {
    if (std::string why = not_serving(); !why.empty()) hang("after the input the back-end no longer serves: " + why);
  }

  // Why a fresh connection goes unserved, or "" when it is served. A crash
  // seen on the way becomes the verdict (and "" is returned).
  std::string not_serving() {
    if (b_.spawned() && !b_.alive()) return died(), std::string{};
    if (b_.spawned()) {
      if (const std::string san = sanitizer_line(b_.stderr_since(mark_)); !san.empty()) {
        v_.kind = Kind::Crash;
        v_.what = "the back-end printed a sanitizer report: " + san;
        v_.signature = "crash " + san;
        return {};
      }
    }
    MessageLog plog(4);
    const auto end = Clock::now() + std::chrono::milliseconds(opt_.probe_ms);
    std::string last;
    for (;;) {
      auto c = b_.connect(std::max(ms_left(end), 1));
      if (b_.spawned() && !b_.alive()) return died(), std::string{};
      if (!c) {
        last = "a fresh connection was not accepted: " + c.message();
        break;
      }
      Frontend probe(std::move(*c), plog, Clock::now() + std::chrono::hours(24));
      Outcome o = probe.try_request(Message::empty(static_cast<uint32_t>(FrontendReq::GET_FEATURES)),
                                    std::max(ms_left(end), 1));
      if (o.kind == Outcome::Reply) return {};
      probe.close();
      if (b_.spawned() && !b_.alive()) return died(), std::string{};
      last = "a fresh connection's GET_FEATURES: " + o.text;
      if (ms_left(end) == 0) break;
      ::usleep(10000);
    }
    return fmt::format("{} (probing for {} ms)", last, opt_.probe_ms);
  }

  void hang(const std::string& what) {
    v_.kind = Kind::Hang;
    v_.what = what;
    v_.signature = "hang";
    log_.record_text(Dir::ToBackend, "(liveness probe) " + what);
  }

  const Options& opt_;
  Backend& b_;
  MessageLog log_;
  std::unique_ptr<Frontend> fe_;
  Negotiation neg_;
  std::vector<std::pair<UniqueFd, uint64_t>> regions_;  // our copies of the memory files, for kActionPoke
  std::map<uint8_t, UniqueFd> kicks_;
  UniqueFd state_write_, state_read_;
  uint64_t mark_ = 0;
  bool ending_ = false;  // the input is over: a close needs no new session
  bool out_of_step_ = false;  // raw bytes went out this session: replies are not required
  size_t sessions_ = 0;       // connections opened for this input
  uint64_t replies_ = 0;      // replies read in the current one
  std::string connect_error_;
  Verdict v_;
};

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Files as named, directories as their regular files in name order; a
// --record-corpus directory stands for its vhost_user_messages/.
std::vector<fs::path> expand(const std::vector<std::string>& names) {
  std::vector<fs::path> out;
  for (const auto& n : names) {
    fs::path p(n);
    if (fs::is_directory(p / "vhost_user_messages")) p /= "vhost_user_messages";
    if (!fs::is_directory(p)) {
      if (!fs::exists(p)) throw std::runtime_error(n + ": no such file or directory");
      out.push_back(p);
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    out.insert(out.end(), files.begin(), files.end());
  }
  return out;
}

uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001b3ull;
  return h;
}

std::string describe_input(const Input& in) {
  std::string s = fmt::format("{} records:", in.size());
  for (const auto& r : in) s += " " + record_name(r);
  return s;
}

// Ctrl-C ends the run between inputs, so the spawned back-end (in a process
// group of its own, which the terminal does not signal) is stopped and its
// directory removed, and what was found so far is summed up.
volatile std::sig_atomic_t g_stop = 0;

void setup_signals() {
  ::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

std::string replay_command(const Options& opt, const std::string& file) {
  return fmt::format("vhost-user-conform --replay {} {}", file, opt.target.describe());
}

}  // namespace

int run_fuzz(const Options& opt) {
  setup_signals();
  std::vector<Input> corpus;
  std::vector<fs::path> files;
  try {
    std::vector<std::string> names = opt.corpus;
    if (names.empty()) names.push_back(fs::is_directory("corpus/vhost_user_messages") ? "corpus/vhost_user_messages"
                                                                                      : CONFORM_CORPUS_DIR "/vhost_user_messages");
    files = expand(names);
    for (const auto& f : files)
      if (Input in = parse(read_file(f)); !in.empty()) corpus.push_back(std::move(in));
  } catch (const std::exception& e) {
    std::cerr << "vhost-user-conform --fuzz: " << e.what() << "\n";
    return 2;
  }
  if (corpus.empty()) {
    std::cerr << "vhost-user-conform --fuzz: no seed inputs in the corpus (--corpus)\n";
    return 2;
  }
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec) {
    std::cerr << "vhost-user-conform --fuzz: cannot create " << opt.out_dir << ": " << ec.message() << "\n";
    return 2;
  }
  std::cerr << fmt::format("fuzz: {} seeds from {} files, --seed {}, target {}\n", corpus.size(), files.size(),
                           opt.seed, opt.target.describe());

  Target target(opt);
  Rng rng(opt.seed);
  const auto t0 = Clock::now();
  auto next_progress = t0 + std::chrono::seconds(3);
  uint64_t runs = 0, duplicates = 0;
  std::set<std::string> seen;
  std::vector<std::string> written;
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto progress = [&] {
    const double s = elapsed();
    std::cerr << fmt::format("fuzz: {} execs in {:.0f} s ({:.0f}/s), {} findings, {} repeats\n", runs, s,
                             s > 0 ? static_cast<double>(runs) / s : 0.0, seen.size(), duplicates);
  };

  for (;;) {
    if (opt.runs && runs >= opt.runs) break;
    if (opt.seconds > 0 && elapsed() >= opt.seconds) break;
    if (opt.max_findings && seen.size() >= opt.max_findings) break;
    if (g_stop) {
      std::cerr << "fuzz: interrupted\n";
      break;
    }
    if (opt.progress && Clock::now() >= next_progress) {
      progress();
      next_progress = Clock::now() + std::chrono::seconds(3);
    }
    const Input& a = corpus[rng() % corpus.size()];
    const Input& b = corpus[rng() % corpus.size()];
    const Input in = mutate(a, b, rng);
    ++runs;

    auto be = target.get();
    if (!be) {
      std::cerr << "vhost-user-conform --fuzz: the back-end could not be started: " << be.message() << "\n";
      return 3;
    }
    Verdict v = Exec(opt, **be).run(in);
    if (opt.verbose) std::cerr << fmt::format("run {}: {} -> {}\n", runs, describe_input(in), kind_name(v.kind));
    if (v.kind == Kind::Unreachable) {
      std::cerr << "vhost-user-conform --fuzz: the back-end could not be reached: " << v.what << "\n";
      return 3;
    }
    if (v.kind == Kind::None) continue;
    if (seen.count(v.signature)) {
      ++duplicates;
      target.fresh();
      continue;
    }
    seen.insert(v.signature);

    // Once more from a clean start: a finding that needs the state an
    // earlier input left behind is written as flaky.
    target.fresh();
    Verdict again;
    if (auto be2 = target.get()) again = Exec(opt, **be2).run(in);
    const bool reproduced = again.kind == v.kind;
    target.fresh();

    const std::vector<uint8_t> bytes = serialize(in);
    const std::string name = fmt::format("{}-{:016x}", kind_name(v.kind), fnv1a(bytes));
    const fs::path file = fs::path(opt.out_dir) / name;
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    {
      std::ofstream txt(file.string() + ".txt", std::ios::trunc);
      txt << "kind: " << kind_name(v.kind) << "\n"
          << "detected: " << v.what << "\n"
          << "reproduced: "
          << (reproduced ? "yes, on a second run" + std::string(target.restartable() ? " against a fresh back-end" : "")
                         : "NO (flaky): the second run gave " + std::string(kind_name(again.kind)) +
                               (again.what.empty() ? "" : ": " + again.what))
          << "\n"
          << "target: " << opt.target.describe() << "\n"
          << fmt::format("found by: --seed {}, run {}\n", opt.seed, runs)
          << "replay: " << replay_command(opt, file.string()) << "\n"
          << "input: " << describe_input(in) << "\n\n"
          << "last messages exchanged:\n"
          << v.log << "\n"
          << "back-end stderr (last lines):\n"
          << (v.stderr_tail.empty() ? std::string("(none kept)\n") : v.stderr_tail) << "\n";
    }
    std::cerr << fmt::format("fuzz: FINDING {} ({}): {}\n      written to {} (.txt beside it)\n", kind_name(v.kind),
                             reproduced ? "reproduced" : "flaky: not reproduced", v.what, file.string());
    written.push_back(file.string());
    if (!target.restartable() && v.kind != Kind::Unanswered) {
      std::cerr << "fuzz: the back-end cannot be restarted from here (not --spawn); stopping\n";
      break;
    }
  }
  progress();
  if (written.empty()) {
    std::cerr << "fuzz: nothing found\n";
    return 0;
  }
  std::cerr << fmt::format("fuzz: {} finding(s) in {}\n", written.size(), opt.out_dir);
  return 1;
}

int run_replay(const Options& opt, const std::vector<std::string>& names) {
  setup_signals();
  std::vector<fs::path> files;
  try {
    files = expand(names);
  } catch (const std::exception& e) {
    std::cerr << "vhost-user-conform --replay: " << e.what() << "\n";
    return 2;
  }
  Target target(opt);
  size_t found = 0;
  for (const auto& f : files) {
    if (g_stop) {
      std::cerr << "vhost-user-conform --replay: interrupted\n";
      break;
    }
    Input in;
    try {
      in = parse(read_file(f));
    } catch (const std::exception& e) {
      std::cerr << "vhost-user-conform --replay: " << e.what() << "\n";
      return 2;
    }
    auto be = target.get();
    if (!be) {
      std::cerr << "vhost-user-conform --replay: the back-end could not be started: " << be.message() << "\n";
      return 3;
    }
    Verdict v = Exec(opt, **be).run(in);
    if (v.kind == Kind::Unreachable) {
      std::cerr << "vhost-user-conform --replay: the back-end could not be reached: " << v.what << "\n";
      return 3;
    }
    if (v.kind == Kind::None) {
      if (opt.verbose || files.size() == 1) std::cerr << f.string() << ": ok, nothing wrong\n";
      continue;
    }
    ++found;
    std::cerr << fmt::format("{}: {}: {}\nlast messages exchanged:\n{}", f.string(), kind_name(v.kind), v.what, v.log);
    if (!v.stderr_tail.empty()) std::cerr << "back-end stderr (last lines):\n" << v.stderr_tail << "\n";
    target.fresh();
  }
  if (files.size() > 1)
    std::cerr << fmt::format("replayed {} inputs: {} reproduce a finding\n", files.size(), found);
  return found ? 1 : 0;
}

}  // namespace conform::fuzz
