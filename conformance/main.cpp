// vhost-user-conform: runs the conformance cases against a vhost-user
// back-end and reports per requirement.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "case.h"
#include "expectations.h"
#include "fuzz_remote.h"
#include "junit.h"
#include "profiles.h"
#include "requirements.h"
#include "runner.h"
#include "vhu/channel.h"

namespace {

enum Exit { kOk = 0, kFailures = 1, kUsage = 2, kUnreachable = 3 };

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

int real_main(int argc, char** argv) {
  using namespace conform;
  CLI::App app{"vhost-user-conform: conformance suite for vhost-user back-ends"};
  app.set_version_flag("--version", "vhost-user-conform 0.1");
  std::string connect, spawn, spawn_siblings, listen, profile, junit, expect, spec = "upstream", device, req_file, spec_sources,
      record_corpus;
  std::vector<std::string> filters;
  bool list = false, requirements = false, check_reqs = false, verbose = false, backend_connects = false,
       no_progress = false;
  int jobs = 1, timeout_ms = 0, quiet_ms = 150;
  std::string uds;
  uint64_t cid = 3;

  auto* g = app.add_option_group("target", "the back-end under test (one of)");
  g->add_option("--connect", connect, "connect to a back-end already listening on PATH");
  g->add_option("--spawn", spawn, "start CMD for every case; {socket} {uds} {cid} {dir} are substituted");
  g->add_option("--listen", listen, "listen on PATH for a back-end that connects as a client");
  g->add_option("--profile", profile, "a preset: ref, virtiofsd, qsd-blk, dpdk, vhost-user-gpu");
  g->require_option(0, 1);
  app.add_option("--spawn-siblings", spawn_siblings,
                 "for the cases that need two VMs in one sibling group (vsock.sibling_*, "
                 "transport_reset.sibling_*): start CMD per case, one back-end serving {socket} and {socket2} "
                 "for VMs {cid} and {cid2} with host sides {uds} and {uds2}; without it (or a profile that has one, "
                 "as ref does) those cases are skipped");
  app.add_flag("--backend-connects", backend_connects,
               "with --spawn and --spawn-siblings: the back-end connects to {socket} (and {socket2}), where the runner "
               "listens");
  app.add_option("--device", device, "device type the cases may drive (vsock, fs, blk, net, gpu)");
  app.add_option("--uds", uds, "with --connect/--listen: the back-end's hybrid-vsock socket path");
  app.add_option("--cid", cid, "with --connect/--listen: the back-end's guest CID");
  app.add_flag("--list", list, "list the cases (after --filter) and exit");
  app.add_option("--filter", filters, "GLOB of case ids to run; a leading '-' excludes (repeatable)");
  app.add_option("--jobs,-j", jobs, "cases in parallel (with --spawn)")->check(CLI::Range(1, 64));
  app.add_option("--junit", junit, "write a JUnit XML report to FILE");
  app.add_option("--expect", expect, "known failures: one case id or glob per line");
  app.add_option("--timeout-ms", timeout_ms, "per-case time limit (overrides each case's own)")->check(CLI::Range(100, 3600000));
  app.add_option("--record-corpus", record_corpus,
                 "write each case's front-end requests to DIR/vhost_user_messages/case-<id>, in the framing of the "
                 "vhost_user_messages fuzz target (fuzz/README.md); a case's second VM goes to case-<id>-vm2");
  bool fuzz = false;
  std::vector<std::string> replay;
  fuzz::Options fo;
  auto* fz = app.add_option_group("fuzzing", "black-box fuzzing of the back-end over its socket (instead of the cases)");
  fz->add_flag("--fuzz", fuzz,
               "send mutated inputs of the vhost_user_messages framing (fuzz/README.md) to the back-end; report "
               "crashes, requests left unanswered and a back-end that stops serving; exit 1 on a finding");
  fz->add_option("--replay", replay,
                 "send FILE (a finding, a seed; a directory: each file in it) to the back-end; exit 1 if any "
                 "shows a finding, 0 if nothing is wrong")
      ->type_name("FILE");
  fz->add_option("--corpus", fo.corpus,
                 "seed inputs: files or directories (also a --record-corpus DIR); default corpus/vhost_user_messages")
      ->type_name("PATH");
  fz->add_option("--seed", fo.seed, "seed of the mutations: the same seed and corpus give the same inputs")
      ->type_name("N");
  fz->add_option("--fuzz-time", fo.seconds, "stop after SECONDS")->type_name("SECONDS");
  fz->add_option("--fuzz-runs", fo.runs, "stop after N inputs")->type_name("N");
  fz->add_option("--fuzz-out", fo.out_dir, "directory for findings (default ./fuzz-findings)")->type_name("DIR");
  fz->add_option("--fuzz-max-findings", fo.max_findings, "stop after N distinct findings")->type_name("N");
  fz->add_flag("--exit-is-answer", fo.exit_is_answer,
               "a spawned back-end that exits with a non-zero status (no signal, no sanitizer report) hung up "
               "rather than crashed: for back-ends that exit on a protocol error by design (virtiofsd)");
  fz->add_option("--reply-timeout-ms", fo.reply_ms, "how long a request that must be answered waits (default 1000)")
      ->check(CLI::Range(10, 600000));
  fz->add_option("--probe-timeout-ms", fo.probe_ms,
                 "after each input, how long a fresh connection may take to answer GET_FEATURES (default 3000)")
      ->check(CLI::Range(10, 600000));
  app.add_option("--quiet-window-ms", quiet_ms, "how long to watch to prove that nothing happens")->check(CLI::Range(10, 10000));
  app.add_flag("--verbose,-v", verbose, "print the decoded message trace on stderr");
  app.add_flag("--no-progress", no_progress, "no progress line");
  app.add_option("--spec", spec, "vhost-user text to judge by: upstream (default) or newest")
      ->check(CLI::IsMember({"upstream", "newest"}));
  app.add_flag("--requirements", requirements, "print the requirement coverage table and exit");
  app.add_option("--requirements-file", req_file, "spec/requirements.xml to use");
  app.add_flag("--check-requirements", check_reqs,
               "check traceability (unknown ids, uncovered MUSTs, quotes) and exit 1 on a problem");
  app.add_option("--spec-sources", spec_sources,
                 "with --check-requirements: directory of the spec texts (and ../traces beside it) to find quotes in; "
                 "without it only the guest runs' quotes (spec/guest-runs) are checked");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  const auto& cases = all_cases();
  if (req_file.empty()) req_file = default_requirements_path();
  Requirements reqs;
  try {
    reqs = Requirements::load(req_file);
  } catch (const std::exception& e) {
    std::cerr << "vhost-user-conform: " << e.what() << "\n";
    return kUsage;
  }
  if (check_reqs) {
    auto bad = check_traceability(reqs, cases, spec_sources);
    for (const auto& b : bad) std::cout << b << "\n";
    std::cout << fmt::format("{} cases, {} requirements: {} problem(s)\n", cases.size(), reqs.all().size(), bad.size());
    return bad.empty() ? kOk : kFailures;
  }
  if (requirements) {
    std::cout << coverage_table(reqs, cases);
    return kOk;
  }
  auto selected = select_cases(cases, filters);
  if (list) {
    for (const auto* c : selected) {
      std::string r;
      for (const auto& q : c->requirements) r += (r.empty() ? "" : ",") + q;
      std::cout << fmt::format("{:<44} {}  [{}]\n", c->id, c->summary, r);
    }
    return kOk;
  }

  RunConfig cfg;
  cfg.verbose = verbose;
  cfg.spec = spec == "newest" ? vhu::SpecText::Newest : vhu::SpecText::Upstream;
  cfg.quiet_window_ms = quiet_ms;
  cfg.record_corpus_dir = record_corpus;
  cfg.requirements = &reqs;
  if (timeout_ms > 0) {
    cfg.default_timeout_ms = timeout_ms;
    cfg.timeout_forced = true;
  }
  if (!profile.empty()) {
    auto t = profile_target(profile, self_dir(), cfg.spec);
    if (!t) {
      std::cerr << "vhost-user-conform: unknown profile '" << profile << "'\n";
      return kUsage;
    }
    cfg.target = *t;
  } else if (!spawn.empty()) {
    cfg.target.mode = TargetMode::Spawn;
    cfg.target.command = spawn;
    cfg.target.backend_connects = backend_connects;
  } else if (!connect.empty()) {
    cfg.target.mode = TargetMode::Connect;
    cfg.target.path = connect;
  } else if (!listen.empty()) {
    cfg.target.mode = TargetMode::Listen;
    cfg.target.path = listen;
  } else {
    std::cerr << "vhost-user-conform: name the back-end: --connect, --spawn, --listen or --profile (see --help)\n";
    return kUsage;
  }
  if (backend_connects && spawn.empty() && spawn_siblings.empty()) {
    std::cerr << "vhost-user-conform: --backend-connects applies to a back-end the runner starts: --spawn or "
                 "--spawn-siblings\n";
    return kUsage;
  }
  if (!spawn_siblings.empty()) {
    TargetSpec t;
    t.mode = TargetMode::Spawn;
    t.command = spawn_siblings;
    t.backend_connects = backend_connects;
    cfg.sibling_target = t;
  } else if (!profile.empty()) {
    cfg.sibling_target = profile_target(profile, self_dir(), cfg.spec, true);
  }
  if (!device.empty()) cfg.target.device = device;
  if (cfg.sibling_target) cfg.sibling_target->device = cfg.target.device;
  cfg.target.uds = uds;
  cfg.target.cid = cid;
  const bool run_cases_now = !fuzz && replay.empty();
  for (const auto* c : run_cases_now ? selected : std::vector<const CaseInfo*>{})
    for (const auto& id : c->requirements)
      if (!reqs.find(id)) std::cerr << fmt::format("warning: {} names unknown requirement {}\n", c->id, id);

  vhu::UniqueFd listener;
  if (cfg.target.mode == TargetMode::Listen) {
    ::unlink(listen.c_str());
    auto l = vhu::listen_unix(listen);
    if (!l) {
      std::cerr << "vhost-user-conform: cannot listen on " << listen << ": " << l.message() << "\n";
      return kUnreachable;
    }
    listener = std::move(*l);
    cfg.listen_fd = listener.get();
  }

  if (!run_cases_now) {
    fo.target = cfg.target;
    fo.listen_fd = cfg.listen_fd;
    fo.spec = cfg.spec;
    fo.progress = !no_progress;
    fo.verbose = verbose;
    return fuzz ? fuzz::run_fuzz(fo) : fuzz::run_replay(fo, replay);
  }

  RunnerOptions ro;
  ro.jobs = jobs;
  ro.progress = !no_progress;
  if (!expect.empty()) {
    try {
      ro.expectations = load_expectations(expect);
    } catch (const std::exception& e) {
      std::cerr << "vhost-user-conform: " << e.what() << "\n";
      return kUsage;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto results = run_cases(selected, cfg, ro);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << summary(results, wall);

  if (!junit.empty()) {
    RunInfo info;
    info.backend = cfg.target.mode == TargetMode::Spawn ? cfg.target.command : cfg.target.describe();
    info.spec_text = spec;
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0 && host[0]) info.hostname = host;
    try {
      write_junit(junit, results, info);
    } catch (const std::exception& e) {
      std::cerr << "vhost-user-conform: " << e.what() << "\n";
      return kUsage;
    }
  }
  bool any_reached = false, any_failed = false;
  for (const auto& r : results) {
    if (!r.launch_error) any_reached = true;
    if (r.counts_as_failure()) any_failed = true;
  }
  if (!results.empty() && !any_reached) {
    std::cerr << "vhost-user-conform: the back-end could not be started or reached: " << results.front().message << "\n";
    return kUnreachable;
  }
  return any_failed ? kFailures : kOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return real_main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "vhost-user-conform: " << e.what() << "\n";
    return kUsage;
  }
}
