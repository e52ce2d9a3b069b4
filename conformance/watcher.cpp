#include "watcher.h"

#include <poll.h>

#include <fmt/format.h>

#include <thread>

namespace conform {

std::vector<std::string> watch_quiet(Ctx& ctx, int ms, QuietOptions opt) {
  if (ms < 0) ms = ctx.cfg().quiet_window_ms;
  std::vector<std::string> bad;
  const auto& qs = ctx.watched();
  std::vector<uint16_t> used0;
  for (auto* q : qs) {
    q->take_calls();
    used0.push_back(q->used_idx());
  }
  const uint64_t hash0 = opt.memory ? ctx.ram().hash() : 0;
  auto end = Clock::now() + std::chrono::milliseconds(ms);
  Frontend* fe = ctx.has_fe() ? &ctx.fe() : nullptr;
  while (Clock::now() < end) {
    std::vector<pollfd> p;
    if (opt.messages && fe && fe->connected()) p.push_back({fe->fd(), POLLIN, 0});
    if (opt.messages && fe && fe->backend_req().valid()) p.push_back({fe->backend_req().fd(), POLLIN, 0});
    if (opt.calls)
      for (auto* q : qs) p.push_back({q->call_fd(), POLLIN, 0});
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
    if (left <= 0) break;
    if (::poll(p.data(), p.size(), left) <= 0) continue;
    size_t i = 0;
    if (opt.messages && fe && fe->connected()) {
      if (p[i].revents) {
        auto m = fe->try_recv(0);
        bad.push_back(m ? "unsolicited message on the vhost-user socket: " + vhu::describe(vhu::Plane::Frontend, *m)
                        : "the vhost-user socket became readable: " + m.message());
        if (!m) fe->close();
      }
      ++i;
    }
    if (opt.messages && fe && fe->backend_req().valid()) {
      if (p[i].revents) {
        auto m = fe->backend_req().recv(0);
        if (m) ctx.log().record(Dir::BackendReq, *m);
        bad.push_back(m ? "back-end request on the BACKEND_REQ channel: " + vhu::describe(vhu::Plane::Backend, *m)
                        : "the BACKEND_REQ channel became readable: " + m.message());
        if (!m) fe->backend_req().close();
      }
      ++i;
    }
    if (opt.calls) {
      for (auto* q : qs) {
        if (p[i].revents) {
          uint64_t n = q->take_calls();
          bad.push_back(fmt::format("call eventfd of ring {} signalled ({}x)", q->index(), n));
        }
        ++i;
      }
    }
    if (!bad.empty()) break;
  }
  if (opt.used) {
    for (size_t k = 0; k < qs.size(); ++k)
      if (qs[k]->used_idx() != used0[k])
        bad.push_back(fmt::format("used idx of ring {} moved from {} to {}", qs[k]->index(), used0[k],
                                  qs[k]->used_idx()));
  }
  if (opt.memory && ctx.ram().hash() != hash0) bad.push_back("guest memory changed");
  return bad;
}

void expect_quiet(Ctx& ctx, const std::string& while_what, int ms, QuietOptions opt) {
  auto bad = watch_quiet(ctx, ms, opt);
  if (bad.empty()) return;
  std::string got;
  for (const auto& b : bad) got += (got.empty() ? "" : "; ") + b;
  fail(fmt::format("no activity from the back-end {} (watched {} ms)", while_what,
                   ms < 0 ? ctx.cfg().quiet_window_ms : ms),
       got);
}

}  // namespace conform
