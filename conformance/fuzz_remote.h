// Black-box fuzzing of any back-end over its socket (vhost-user-conform
// --fuzz) and replay of what it found (--replay). Inputs are in the
// `vhost_user_messages` framing (vhu/fuzz_framing.h): each record is sent as
// a real message with real fds (the rules of vhu/fuzz_fds.h), and the
// harness actions kick rings, write into the memory files the runner handed
// over and feed the device-state pipe, so ring-level inputs reach the
// back-end too.
//
// What counts as a finding, after each input:
//  - crash: a spawned back-end died of a signal we did not send, exited with
//    a non-zero status (unless exit_is_answer), or printed a sanitizer report;
//  - unanswered: a request that must be answered (one with a reply of its
//    own, or need_reply once REPLY_ACK was negotiated in that input) got
//    neither a reply nor a closed connection in time. A close is an answer:
//    the spec lets a back-end drop a front-end that sends garbage;
//  - hang: the back-end no longer serves a fresh connection (connect, then
//    GET_FEATURES) after the input.
// Each finding is executed once more (on a fresh back-end when spawned)
// before it is written; one that does not come back is written as flaky.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher.h"
#include "vhu/features.h"

namespace conform::fuzz {

struct Options {
  TargetSpec target;
  int listen_fd = -1;                 // --listen: the runner's listener
  std::vector<std::string> corpus;    // files, or directories of seeds; empty: corpus/vhost_user_messages
  std::string out_dir = "fuzz-findings";
  uint64_t seed = 1;
  double seconds = 0;                 // 0: no time limit
  uint64_t runs = 0;                  // 0: no run limit
  int reply_ms = 1000;                // a must-answer request waits this long
  int probe_ms = 3000;                // the liveness probe, all attempts
  uint64_t max_findings = 0;          // stop after this many distinct ones; 0: never
  // A spawned back-end that exits (any status, no signal, no sanitizer
  // report) has hung up, not crashed: for back-ends that end the process on
  // a protocol error by design (virtiofsd's libvhost-user panic handler).
  bool exit_is_answer = false;
  vhu::SpecText spec = vhu::SpecText::Upstream;  // --spec: which requests a back-end must know
  bool progress = true;
  bool verbose = false;               // each input's verdict on stderr
};

// Both return the process exit status: 0 nothing found, 1 findings
// (reproduced ones, for --replay), 2 bad usage or input, 3 the back-end
// could not be started or reached.
int run_fuzz(const Options& opt);
int run_replay(const Options& opt, const std::vector<std::string>& files);

}  // namespace conform::fuzz
