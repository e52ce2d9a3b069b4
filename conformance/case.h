// The case framework. A case is one function registered with CONFORM_CASE in
// conformance/cases/<area>.cpp: an id `area.name`, the requirement ids it
// checks, what it needs from the back-end, and a body that throws a
// CaseFailure (via fail/check) or CaseSkip (via skip) or returns to pass.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corpus_recorder.h"
#include "failure.h"
#include "frontend.h"
#include "guest_ram.h"
#include "launcher.h"
#include "msglog.h"
#include "vhu/features.h"
#include "vsock_guest.h"

namespace conform {

class Ctx;
class Requirements;

struct CaseInfo {
  // Every member has an initializer so cases may name only what they need.
  std::string id{};                          // "area.name"
  std::vector<std::string> requirements{};   // ids in spec/requirements.xml
  std::string summary{};                     // one line: what is checked
  std::string device{};                      // "" = any device type
  std::vector<unsigned> protocol_features{}; // VHOST_USER_PROTOCOL_F_* bits it needs offered
  std::vector<unsigned> features{};          // virtio feature bits it needs offered
  int timeout_ms = 0;                      // 0 = the run's default
  // The verdict differs between the upstream and the newest vhost-user text.
  bool spec_dependent = false;
  // Needs a second VM in the same sibling group as the first: the run's
  // sibling target (--spawn-siblings, or the profile's) starts the back-end;
  // without one the case is skipped, saying how to provide it. Ctx::sibling().
  bool siblings = false;
  std::function<void(Ctx&)> body{};

  std::string area() const { return id.substr(0, id.find('.')); }
  std::string name() const { return id.substr(id.find('.') + 1); }
};

bool register_case(CaseInfo info, void (*body)(Ctx&));
const std::vector<CaseInfo>& all_cases();

#define CONFORM_CASE_CAT2(a, b) a##b
#define CONFORM_CASE_CAT(a, b) CONFORM_CASE_CAT2(a, b)
// CONFORM_CASE(fn, .id = "area.name", .requirements = {...}, ...) { body using ctx }
#define CONFORM_CASE(fn, ...)                                                             \
  static void fn(::conform::Ctx& ctx);                                                    \
  [[maybe_unused]] static const bool CONFORM_CASE_CAT(fn, _registered) =                  \
      ::conform::register_case(::conform::CaseInfo{__VA_ARGS__}, &fn);                    \
  static void fn([[maybe_unused]] ::conform::Ctx& ctx)

// Settings of the whole run that cases see.
struct RunConfig {
  TargetSpec target;
  // For CaseInfo::siblings cases: a spawned back-end serving two VMs that
  // share a group ({socket} {uds} {cid} and {socket2} {uds2} {cid2}).
  std::optional<TargetSpec> sibling_target;
  vhu::SpecText spec = vhu::SpecText::Upstream;
  int default_timeout_ms = 5000;
  bool timeout_forced = false;   // --timeout-ms given: overrides the cases' own
  bool verbose = false;
  int quiet_window_ms = 150;     // how long a watcher watches to prove a negative
  int listen_fd = -1;            // --listen
  std::string record_corpus_dir; // --record-corpus: "" = off
  const Requirements* requirements = nullptr;  // quoted in failure reports when set
};

// Everything a case body works with. Created fresh for each case.
class Ctx {
 public:
  // `vm` labels a second VM's context in --verbose output ("" for the first).
  Ctx(const CaseInfo& info, const RunConfig& cfg, Backend& backend, Clock::time_point deadline,
      std::string vm = {});
  ~Ctx();

  const CaseInfo& info() const { return info_; }
  const RunConfig& cfg() const { return cfg_; }
  vhu::SpecText spec() const { return cfg_.spec; }
  bool newest() const { return cfg_.spec == vhu::SpecText::Newest; }
  Backend& backend() { return backend_; }
  MessageLog& log() { return log_; }
  const CorpusRecorder& corpus() const { return corpus_; }
  Clock::time_point deadline() const { return deadline_; }
  int remaining_ms() const;

  // The front-end connection; the first call connects.
  Frontend& fe();
  // Drops the current connection and makes a new one. nullopt-like failure
  // text in *why when the back-end does not accept another connection.
  Frontend* reconnect(std::string* why);
  bool has_fe() const { return fe_ != nullptr; }
  // Points fe() at `other` and hands back the current connection: a case that
  // drives two back-ends (a migration's source and destination) swaps them.
  std::unique_ptr<Frontend> swap_fe(std::unique_ptr<Frontend> other) {
    fe_.swap(other);
    return other;
  }

  GuestRam& ram();
  // The vsock guest driver (needs a vsock target); created on first use.
  VsockGuest& vsock(bool event_idx);
  bool has_vsock() const { return vsock_ != nullptr; }
  HostSide host() const { return HostSide(backend_.placeholders().uds); }
  uint64_t cid() const { return backend_.placeholders().cid; }

  // Skips unless the back-end offered what the case declared; call once the
  // features are known (handshake() does).
  void check_needs();
  void require_protocol(unsigned bit);
  void require_feature(unsigned bit);
  void require_device(const std::string& device);

  // GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES(offered & accept),
  // SET_OWNER, then check_needs(). Returns the offered virtio features.
  uint64_t handshake(uint64_t accept_protocol = ~0ull);

  // The back-end is still there and answers: GET_FEATURES round trip on the
  // current connection. Fails with `after` in the message otherwise.
  void expect_alive(const std::string& after);

  void note(std::string text) { notes_.push_back(std::move(text)); }
  const std::vector<std::string>& notes() const { return notes_; }
  // Negotiated features for the report.
  std::string negotiated() const;

  // The sibling VM (CaseInfo::siblings only): a context of its own, with its
  // own front-end connection, guest memory, vsock guest, host side and CID,
  // on the same back-end process. Created on first use.
  Ctx& sibling();
  bool has_sibling() const { return sibling_ != nullptr; }

  // Watchers over a window: the running guest queues are registered here.
  void watch_queue(GuestQueue* q) { watched_.push_back(q); }
  const std::vector<GuestQueue*>& watched() const { return watched_; }

 private:
  const CaseInfo& info_;
  const RunConfig& cfg_;
  Backend& backend_;
  Clock::time_point deadline_;
  MessageLog log_;
  CorpusRecorder corpus_;
  std::unique_ptr<Frontend> fe_;
  std::unique_ptr<GuestRam> ram_;
  std::unique_ptr<VsockGuest> vsock_;
  std::vector<GuestQueue*> watched_;
  std::vector<std::string> notes_;
  std::string vm_;
  // Declared in this order so that the sibling's context goes before the
  // Backend view it talks through.
  std::unique_ptr<Backend> sibling_backend_;
  std::unique_ptr<Ctx> sibling_;
};

}  // namespace conform
