#include "runner.h"

#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include "junit.h"
#include "requirements.h"

namespace conform {

std::vector<const CaseInfo*> select_cases(const std::vector<CaseInfo>& all, const std::vector<std::string>& filters) {
  bool any_include = false;
  for (const auto& f : filters)
    if (!f.empty() && f[0] != '-') any_include = true;
  std::vector<const CaseInfo*> out;
  for (const auto& c : all) {
    bool in = !any_include;
    for (const auto& f : filters) {
      if (!f.empty() && f[0] == '-') {
        if (glob_match(f.substr(1), c.id)) in = false;
      } else if (glob_match(f, c.id)) {
        in = true;
      }
    }
    if (in) out.push_back(&c);
  }
  return out;
}

namespace {
bool sanitizer_report(const std::string& err) {
  return err.find("ERROR: AddressSanitizer") != std::string::npos ||
         err.find("ERROR: LeakSanitizer") != std::string::npos ||
         err.find("runtime error:") != std::string::npos ||
         err.find("ThreadSanitizer") != std::string::npos;
}
}  // namespace

CaseResult run_one(const CaseInfo& c, const RunConfig& cfg, uint64_t cid) {
  CaseResult r;
  r.info = &c;
  r.timestamp = format_timestamp(std::time(nullptr));
  const auto t0 = Clock::now();
  const int timeout = cfg.timeout_forced || c.timeout_ms == 0 ? cfg.default_timeout_ms : c.timeout_ms;
  if (c.siblings && !cfg.sibling_target) {
    r.verdict = Verdict::Skip;
    r.message =
        "needs a second VM in the same sibling group and the target has none: give --spawn-siblings 'CMD' that "
        "starts one back-end serving two VMs, {socket} {uds} {cid} and {socket2} {uds2} {cid2} (the ref profile "
        "has one)";
    r.details = fmt::format("case: {} - {}\n{}\n", c.id, c.summary, r.message);
    return r;
  }
  // A sibling case gets a back-end of its own that serves both VMs.
  auto launched = c.siblings ? Backend::launch(*cfg.sibling_target, cid) : Backend::launch(cfg.target, cid, cfg.listen_fd);
  if (!launched) {
    r.verdict = Verdict::Error;
    r.launch_error = true;
    r.message = "back-end could not be started: " + launched.message();
    r.details = r.message + "\n";
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
  }
  Backend& be = **launched;
  r.backend_command = be.command_line();
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout);

  // Watchdog: a back-end that hangs the case past its deadline is killed, which
  // unblocks every wait on its sockets.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> killed{false};
  std::thread dog([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_until(lock, deadline + std::chrono::milliseconds(1000), [&] { return done; })) {
      killed = true;
      be.kill_now();
    }
  });

  std::string expected, got, detail;
  {
    Ctx ctx(c, cfg, be, deadline);
    try {
      c.body(ctx);
      r.verdict = Verdict::Pass;
    } catch (const CaseSkip& s) {
      r.verdict = Verdict::Skip;
      r.message = s.reason;
    } catch (const CaseFailure& f) {
      r.verdict = Verdict::Fail;
      expected = f.expected;
      got = f.got;
      detail = f.detail;
      r.message = fmt::format("expected {}; got {}", f.expected, f.got);
    } catch (const LaunchError& e) {
      r.verdict = Verdict::Error;
      r.launch_error = true;
      r.message = "back-end could not be reached: " + e.message;
    } catch (const std::exception& e) {
      r.verdict = Verdict::Error;
      r.message = std::string("runner error: ") + e.what();
    }
    if (Clock::now() > deadline && r.verdict != Verdict::Skip) {
      if (r.verdict == Verdict::Pass) r.verdict = Verdict::Fail;
      if (r.verdict == Verdict::Fail)
        r.message = fmt::format("case did not finish within {} ms{}", timeout, killed ? " (hung back-end killed)" : "") +
                    (r.message.empty() ? "" : "; " + r.message);
    }
    r.message_log = ctx.log().render();
    if (ctx.has_sibling())
      r.message_log += fmt::format("--- second VM (CID {}, {}) ---\n{}", ctx.sibling().cid(),
                                   ctx.sibling().backend().placeholders().socket, ctx.sibling().log().render());
    if (!cfg.record_corpus_dir.empty()) {
      if (!ctx.corpus().empty())
        if (auto w = ctx.corpus().write(cfg.record_corpus_dir, c.id); !w) ctx.note(w.message());
      // The second VM's connection is an input of its own: the target fuzzes one front-end.
      if (ctx.has_sibling() && !ctx.sibling().corpus().empty())
        if (auto w = ctx.sibling().corpus().write(cfg.record_corpus_dir, c.id + "-vm2"); !w) ctx.note(w.message());
    }
    r.negotiated = ctx.negotiated();
    auto add_note = [&](const std::string& n) {
      detail += (detail.empty() ? "" : "\n") + n;
      r.notes += (r.notes.empty() ? "" : "; ") + n;
    };
    for (const auto& n : ctx.notes()) add_note(n);
    if (ctx.has_sibling())
      for (const auto& n : ctx.sibling().notes()) add_note("second VM: " + n);
    if (c.spec_dependent)
      detail += fmt::format("{}verdict depends on the spec text; judged by the {} text (--spec)",
                            detail.empty() ? "" : "\n", cfg.spec == vhu::SpecText::Newest ? "newest" : "upstream");
  }  // Ctx (and the front-end socket) closed here, before the back-end is stopped.

  be.terminate(1000);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  dog.join();
  r.backend_status = be.status_text();
  r.backend_stderr = be.stderr_text();
  if (r.launch_error && !r.backend_stderr.empty()) {
    std::string tail = r.backend_stderr.substr(r.backend_stderr.size() > 300 ? r.backend_stderr.size() - 300 : 0);
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    r.message += " (stderr ends: " + tail.substr(tail.rfind('\n') == std::string::npos ? 0 : tail.rfind('\n') + 1) + ")";
  }
  // Asked after terminate() too: a back-end that crashes as the case ends
  // (its socket closed before the runner could reap it) dies of its own
  // signal, not of the runner's SIGTERM.
  if (be.crashed() && r.verdict != Verdict::Error) {
    r.verdict = Verdict::Fail;
    r.message = "back-end crashed: " + r.backend_status + (r.message.empty() ? "" : "; " + r.message);
  } else if (sanitizer_report(r.backend_stderr) && r.verdict != Verdict::Error) {
    r.verdict = Verdict::Fail;
    r.message = "back-end sanitizer report on stderr" + (r.message.empty() ? "" : "; " + r.message);
  }
  std::string d;
  d += "case: " + c.id + " - " + c.summary + "\n";
  if (!expected.empty()) d += "expected: " + expected + "\ngot:      " + got + "\n";
  if (r.verdict != Verdict::Fail && r.verdict != Verdict::Pass && !r.message.empty()) d += r.message + "\n";
  if (!detail.empty()) d += detail + "\n";
  // What the verdict rests on, quoted: the level tells a MUST broken from a SHOULD.
  if (cfg.requirements != nullptr) {
    d += "requirements:\n" + requirements_report(*cfg.requirements, c.requirements, cfg.spec);
  } else {
    std::string reqs;
    for (const auto& q : c.requirements) reqs += (reqs.empty() ? "" : ", ") + q;
    d += "requirements: " + reqs + "\n";
  }
  r.details = d;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

std::vector<CaseResult> run_cases(const std::vector<const CaseInfo*>& cases, const RunConfig& cfg,
                                  const RunnerOptions& opt) {
  std::vector<CaseResult> results(cases.size());
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t finished = 0, pass = 0, fail = 0, skip = 0;
  const bool tty = opt.progress && ::isatty(2);
  auto report = [&](const CaseResult& r) {
    std::lock_guard lock(mu);
    ++finished;
    if (r.verdict == Verdict::Pass) ++pass;
    else if (r.verdict == Verdict::Skip) ++skip;
    else ++fail;
    if (!opt.progress) return;
    std::string tag = r.expected_failure ? "XFAIL" : r.unexpected_pass ? "XPASS" : verdict_name(r.verdict);
    if (tty) {
      std::cerr << fmt::format("\r\033[K[{}/{}] pass {} fail {} skip {}  {} {}", finished, cases.size(), pass, fail,
                               skip, tag, r.info->id)
                << std::flush;
      if (r.counts_as_failure()) std::cerr << fmt::format("\r\033[K{} {}: {}\n", tag, r.info->id, r.message);
    } else {
      std::cerr << fmt::format("[{}/{}] {} {}{}\n", finished, cases.size(), tag, r.info->id,
                               r.verdict == Verdict::Pass ? "" : ": " + r.message);
    }
  };
  auto worker = [&] {
    for (;;) {
      size_t i = next++;
      if (i >= cases.size()) return;
      CaseResult r = run_one(*cases[i], cfg, 3 + i);
      if (const auto* e = find_expectation(opt.expectations, r.info->id)) {
        r.expect_reason = e->reason.empty() ? "listed in the expectations file" : e->reason;
        if (r.verdict == Verdict::Fail || r.verdict == Verdict::Error) r.expected_failure = true;
        else if (r.verdict == Verdict::Pass) r.unexpected_pass = true;
      }
      report(r);
      results[i] = std::move(r);
    }
  };
  int jobs = std::max(1, opt.jobs);
  if (cfg.target.mode != TargetMode::Spawn) jobs = 1;  // one back-end, one conversation at a time
  std::vector<std::thread> threads;
  for (int j = 1; j < jobs; ++j) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (tty) std::cerr << "\r\033[K";
  return results;
}

std::string summary(const std::vector<CaseResult>& results, double wall) {
  size_t pass = 0, fail = 0, skip = 0, err = 0, xfail = 0, xpass = 0;
  std::string lines;
  for (const auto& r : results) {
    if (r.expected_failure) ++xfail;
    else if (r.verdict == Verdict::Pass) ++pass;
    else if (r.verdict == Verdict::Skip) ++skip;
    else if (r.verdict == Verdict::Fail) ++fail;
    else ++err;
    if (r.unexpected_pass) ++xpass;
    if (r.counts_as_failure())
      lines += fmt::format("  {:<5} {}: {}\n", verdict_name(r.verdict), r.info->id, r.message);
    else if (r.unexpected_pass)
      lines += fmt::format("  XPASS {}: passed but is listed as a known failure ({})\n", r.info->id, r.expect_reason);
  }
  std::string s = fmt::format("{} cases: {} passed, {} failed, {} errors, {} skipped", results.size(), pass, fail, err, skip);
  if (xfail) s += fmt::format(", {} known failures", xfail);
  if (xpass) s += fmt::format(", {} unexpected passes", xpass);
  s += fmt::format(" in {:.2f} s\n", wall);
  return lines + s;
}

}  // namespace conform
