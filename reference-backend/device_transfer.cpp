// SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE: the state moves through a pipe
// the front-end created, read or written from the event loop, never blocking.
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "backend.h"
#include "device_state.h"
#include "faults.h"
#include "log.h"

namespace vsockref {

namespace {
// How long CHECK_DEVICE_STATE may wait for a front-end that never closes its
// end of the pipe before the transfer counts as failed.
constexpr std::chrono::milliseconds kTransferTimeout{10000};
constexpr uint64_t kError = 1;
}  // namespace

vhu::Result<uint64_t> Backend::set_device_state_fd(Ctx& c) {
  auto p = vhu::payload_device_state(c.msg);
  if (!p) return p.error();
  uint64_t result = kError | vhu::kDeviceStateInvalidFd;
  if (VSOCKREF_FAULT(device_state_lax_params)) {
    cancel_transfer();
    if (c.msg.fds.empty())
      result = vhu::kDeviceStateInvalidFd;
    else
      result = p->direction == vhu::kTransferLoad ? start_load(std::move(c.msg.fds[0]))
                                                  : start_save(std::move(c.msg.fds[0]));
  } else if (c.msg.fds.empty()) {
    VLOG(Warn, "{}: SET_DEVICE_STATE_FD: no fd attached", opts_.vsock.name);
  } else if (p->direction != vhu::kTransferSave && p->direction != vhu::kTransferLoad) {
    VLOG(Warn, "{}: SET_DEVICE_STATE_FD: field direction = {} is neither save (0) nor load (1)", opts_.vsock.name,
         p->direction);
  } else if (p->phase != vhu::kPhaseStopped) {
    VLOG(Warn, "{}: SET_DEVICE_STATE_FD: field phase = {} is not 'stopped' (0)", opts_.vsock.name, p->phase);
  } else if (!suspended()) {
    VLOG(Warn, "{}: SET_DEVICE_STATE_FD: phase 'stopped' but rings are still started", opts_.vsock.name);
  } else {
    cancel_transfer();
    result = p->direction == vhu::kTransferSave ? start_save(std::move(c.msg.fds[0])) : start_load(std::move(c.msg.fds[0]));
  }
  vhu::Message r;
  const bool error = (result & vhu::kDeviceStateErrorMask) != 0;
  if (error && VSOCKREF_FAULT(device_state_error_with_fd)) {
    result &= ~vhu::kDeviceStateInvalidFd;
    r.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  if (!error && VSOCKREF_FAULT(device_state_no_invalid_fd_flag)) result &= ~vhu::kDeviceStateInvalidFd;
  r.set_payload(result);
  reply(c.msg, std::move(r));
  c.replied = true;
  return 0;
}

vhu::Result<uint64_t> Backend::check_device_state(Ctx& c) {
  if (transfer_ == Transfer::Saving || transfer_ == Transfer::Loading) {
    // "The back-end responds once it knows whether the transfer and
    // processing was successful": hold the reply, keep the loop running.
    deferred_check_ = true;
    deferred_req_ = vhu::Message::empty(c.msg.hdr.request);
    c.deferred = true;
    return 0;
  }
  // Replied whether or not REPLY_ACK was negotiated: it has a reply of its own.
  const bool ok = transfer_ == Transfer::Done || VSOCKREF_FAULT(check_device_state_always_ok);
  reply_u64(c.msg, ok ? 0 : kError);
  c.replied = true;
  return 0;
}

void Backend::answer_deferred_check() {
  if (!deferred_check_) return;
  deferred_check_ = false;
  const bool ok = transfer_ == Transfer::Done || VSOCKREF_FAULT(check_device_state_always_ok);
  reply_u64(deferred_req_, ok ? 0 : kError);
  if (on_resume) on_resume();
}

uint64_t Backend::start_save(vhu::UniqueFd fd) {
  transfer_buf_ = serialize_device_state(device_.save(features_, protocol_features_));
  transfer_off_ = 0;
  transfer_fd_ = std::move(fd);
  transfer_ = Transfer::Saving;
  set_nonblocking(transfer_fd_.get());
  transfer_event();  // a pipe takes the whole blob at once in practice
  if (transfer_ == Transfer::Saving) {
    if (!loop_.add(transfer_fd_.get(), EPOLLOUT, [this](uint32_t) { transfer_event(); })) {
      transfer_ = Transfer::Failed;
      transfer_fd_.reset();
    } else {
      transfer_timer_ = loop_.add_timer(kTransferTimeout, [this] {
        transfer_timer_ = 0;
        VLOG(Warn, "{}: device state save: the front-end did not read within {} ms", opts_.vsock.name,
             kTransferTimeout.count());
        cancel_transfer();
        transfer_ = Transfer::Failed;
        answer_deferred_check();
      });
    }
  }
  return vhu::kDeviceStateInvalidFd;  // success, and we use the front-end's channel
}

uint64_t Backend::start_load(vhu::UniqueFd fd) {
  transfer_buf_.clear();
  transfer_fd_ = std::move(fd);
  transfer_ = Transfer::Loading;
  set_nonblocking(transfer_fd_.get());
  if (!loop_.add(transfer_fd_.get(), EPOLLIN, [this](uint32_t) { transfer_event(); })) {
    // A regular file: reading it never blocks, so read it all now.
    transfer_event();
  } else {
    transfer_timer_ = loop_.add_timer(kTransferTimeout, [this] {
      transfer_timer_ = 0;
      VLOG(Warn, "{}: device state load: no end of file within {} ms", opts_.vsock.name, kTransferTimeout.count());
      cancel_transfer();
      transfer_ = Transfer::Failed;
      answer_deferred_check();
    });
  }
  return vhu::kDeviceStateInvalidFd;
}

void Backend::transfer_event() {
  if (transfer_ == Transfer::Saving) {
    while (transfer_off_ < transfer_buf_.size()) {
      const ssize_t n = ::write(transfer_fd_.get(), transfer_buf_.data() + transfer_off_,
                                transfer_buf_.size() - transfer_off_);
      if (n > 0) {
        transfer_off_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      VLOG(Warn, "{}: device state save: write: {}", opts_.vsock.name, n < 0 ? std::strerror(errno) : "0 bytes");
      cancel_transfer();
      transfer_ = Transfer::Failed;
      answer_deferred_check();
      return;
    }
    // Closing our end is the end-of-data signal.
    if (VSOCKREF_FAULT(save_never_closes)) {
      loop_.remove(transfer_fd_.get());
      (void)transfer_fd_.release();  // left open on purpose: the reader never sees EOF
    }
    cancel_transfer();
    transfer_ = Transfer::Done;
    answer_deferred_check();
    return;
  }
  if (transfer_ != Transfer::Loading) return;
  uint8_t buf[4096];
  for (;;) {
    const ssize_t n = ::read(transfer_fd_.get(), buf, sizeof buf);
    if (n > 0) {
      if (transfer_buf_.size() + static_cast<size_t>(n) > kDeviceStateMaxBytes) {
        VLOG(Warn, "{}: device state load: more than {} bytes", opts_.vsock.name, kDeviceStateMaxBytes);
        cancel_transfer();
        transfer_ = Transfer::Failed;
        answer_deferred_check();
        return;
      }
      transfer_buf_.insert(transfer_buf_.end(), buf, buf + n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) {
      VLOG(Warn, "{}: device state load: read: {}", opts_.vsock.name, std::strerror(errno));
      cancel_transfer();
      transfer_ = Transfer::Failed;
      answer_deferred_check();
      return;
    }
    finish_load();
    return;
  }
}

void Backend::finish_load() {
  std::vector<uint8_t> blob = std::move(transfer_buf_);
  cancel_transfer();
  auto s = parse_device_state(blob);
  if (!s) {
    VLOG(Warn, "{}: device state load rejected: {}", opts_.vsock.name, s.message());
    transfer_ = Transfer::Failed;
  } else if ((s->features & ~offered_features()) != 0 ||
             (s->protocol_features & ~offered_protocol_features()) != 0) {
    VLOG(Warn, "{}: device state load rejected: the source negotiated features {:#x} / protocol features {:#x} "
         "this back-end does not offer", opts_.vsock.name, s->features, s->protocol_features);
    transfer_ = Transfer::Failed;
  } else {
    VLOG(Info, "{}: device state loaded (source CID {}, features {:#x})", opts_.vsock.name, s->guest_cid,
         s->features);
    device_.loaded(*s);
    transfer_ = Transfer::Done;
  }
  answer_deferred_check();
}

void Backend::cancel_transfer() {
  if (transfer_fd_) loop_.remove(transfer_fd_.get());
  transfer_fd_.reset();
  if (transfer_timer_) loop_.cancel_timer(transfer_timer_);
  transfer_timer_ = 0;
  transfer_buf_.clear();
  transfer_off_ = 0;
  if (transfer_ == Transfer::Saving || transfer_ == Transfer::Loading) transfer_ = Transfer::None;
}

}  // namespace vsockref
