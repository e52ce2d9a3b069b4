#include "case.h"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <mutex>
#include <stdexcept>

namespace conform {

namespace {
std::vector<CaseInfo>& registry() {
  static std::vector<CaseInfo> r;
  return r;
}
std::mutex echo_mu;
}  // namespace

bool register_case(CaseInfo info, void (*body)(Ctx&)) {
  info.body = body;
  registry().push_back(std::move(info));
  return true;
}

const std::vector<CaseInfo>& all_cases() {
  static const bool sorted = [] {
    std::stable_sort(registry().begin(), registry().end(),
                     [](const CaseInfo& a, const CaseInfo& b) { return a.id < b.id; });
    return true;
  }();
  (void)sorted;
  return registry();
}

Ctx::Ctx(const CaseInfo& info, const RunConfig& cfg, Backend& backend, Clock::time_point deadline, std::string vm)
    : info_(info), cfg_(cfg), backend_(backend), deadline_(deadline), vm_(std::move(vm)) {
  if (cfg.verbose) {
    log_.set_echo([id = vm_.empty() ? info.id : info.id + " " + vm_](const std::string& line) {
      std::lock_guard lock(echo_mu);
      std::cerr << "[" << id << "] " << line << "\n";
    });
  }
  if (!cfg.record_corpus_dir.empty()) {
    log_.set_tap([this](Dir d, const vhu::Message& m) {
      if (d == Dir::ToBackend) corpus_.add(m);
    });
  }
}

Ctx::~Ctx() = default;

int Ctx::remaining_ms() const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
  return static_cast<int>(std::max<long long>(left, 0));
}

Frontend& Ctx::fe() {
  if (!fe_) {
    auto s = backend_.connect(std::min(remaining_ms(), cfg_.target.start_timeout_ms));
    if (!s) throw LaunchError{s.message()};
    fe_ = std::make_unique<Frontend>(std::move(*s), log_, deadline_);
  }
  return *fe_;
}

Frontend* Ctx::reconnect(std::string* why) {
  if (fe_) fe_->close();
  fe_.reset();
  auto s = backend_.connect(std::min(remaining_ms(), 2000));
  if (!s) {
    if (why) *why = s.message();
    return nullptr;
  }
  log_.record_text(Dir::ToBackend, "(new connection)");
  fe_ = std::make_unique<Frontend>(std::move(*s), log_, deadline_);
  return fe_.get();
}

Ctx& Ctx::sibling() {
  if (sibling_) return *sibling_;
  if (!info_.siblings) throw std::logic_error("suite bug: " + info_.id + " uses sibling() without .siblings = true");
  auto b = backend_.second_vm();
  if (!b) throw LaunchError{"the second VM: " + b.message()};
  sibling_backend_ = std::move(*b);
  sibling_ = std::make_unique<Ctx>(info_, cfg_, *sibling_backend_, deadline_, "second VM");
  return *sibling_;
}

GuestRam& Ctx::ram() {
  if (!ram_) ram_ = std::make_unique<GuestRam>();
  return *ram_;
}

VsockGuest& Ctx::vsock(bool event_idx) {
  require_device("vsock");
  if (!vsock_) {
    vsock_ = std::make_unique<VsockGuest>(ram(), cid(), event_idx);
    watch_queue(&vsock_->rx());
    watch_queue(&vsock_->tx());
  }
  return *vsock_;
}

void Ctx::require_device(const std::string& device) {
  if (cfg_.target.device != device)
    skip(fmt::format("needs a {} back-end to drive its queues; the target is a {} device", device,
                     cfg_.target.device));
}

void Ctx::require_feature(unsigned bit) {
  auto& f = fe();
  if (!f.offered_features) f.get_features();
  if (!vhu::has_bit(*f.offered_features, bit))
    skip(fmt::format("back-end does not offer {}", vhu::virtio_feature_name(bit, cfg_.target.device == "vsock")));
}

void Ctx::require_protocol(unsigned bit) {
  auto& f = fe();
  if (!f.offered_features) f.get_features();
  if (!vhu::has_bit(*f.offered_features, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES))
    skip(fmt::format("back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES, so not VHOST_USER_PROTOCOL_F_{}",
                     vhu::protocol_feature_name(bit)));
  if (!f.offered_protocol) f.get_protocol_features();
  if (!vhu::has_bit(*f.offered_protocol, bit))
    skip(fmt::format("back-end does not offer VHOST_USER_PROTOCOL_F_{}", vhu::protocol_feature_name(bit)));
}

void Ctx::check_needs() {
  if (!info_.device.empty()) require_device(info_.device);
  for (unsigned b : info_.features) require_feature(b);
  for (unsigned b : info_.protocol_features) require_protocol(b);
}

uint64_t Ctx::handshake(uint64_t accept_protocol) {
  if (!info_.device.empty()) require_device(info_.device);
  auto& f = fe();
  uint64_t feats = f.get_features();
  if (vhu::has_bit(feats, vhu::feature::VHOST_USER_F_PROTOCOL_FEATURES)) {
    uint64_t pf = f.get_protocol_features();
    f.set_protocol_features(pf & accept_protocol & vhu::protocol_features_in(cfg_.spec));
  }
  f.set_owner();
  check_needs();
  return feats;
}

void Ctx::expect_alive(const std::string& after) {
  auto& f = fe();
  auto o = f.try_request(vhu::Message::empty(static_cast<uint32_t>(vhu::FrontendReq::GET_FEATURES)));
  if (o.kind != Outcome::Reply || o.reply.payload.size() != 8)
    fail("the back-end to keep answering (GET_FEATURES) " + after, o.text + "; back-end " + backend_.status_text());
}

std::string Ctx::negotiated() const {
  if (!fe_) return "(no connection)";
  std::string s;
  const bool vsock = cfg_.target.device == "vsock";
  if (fe_->offered_features) s += "offered features " + vf_text(*fe_->offered_features, vsock) + "; ";
  if (fe_->acked_features) s += "acked features " + vf_text(*fe_->acked_features, vsock) + "; ";
  if (fe_->offered_protocol) s += "offered protocol features " + pf_text(*fe_->offered_protocol) + "; ";
  if (fe_->acked_protocol) s += "acked protocol features " + pf_text(*fe_->acked_protocol);
  return s.empty() ? "(none)" : s;
}

}  // namespace conform
