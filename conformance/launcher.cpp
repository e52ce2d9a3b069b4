#include "launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include "vhu/channel.h"
#include "vhu/process_group.h"

extern char** environ;

namespace conform {

using vhu::Err;
using vhu::UniqueFd;

std::string TargetSpec::describe() const {
  switch (mode) {
    case TargetMode::Connect: return "--connect " + path;
    case TargetMode::Listen: return "--listen " + path;
    case TargetMode::Spawn: return "--spawn '" + command + "'" + (backend_connects ? " --backend-connects" : "");
  }
  return {};
}

std::string substitute(const std::string& command, const Placeholders& p) {
  std::string out;
  for (size_t i = 0; i < command.size();) {
    auto try_sub = [&](std::string_view key, const std::string& value) {
      if (command.compare(i, key.size(), key) == 0) {
        out += value;
        i += key.size();
        return true;
      }
      return false;
    };
    if (try_sub("{socket}", p.socket) || try_sub("{uds}", p.uds) || try_sub("{cid}", std::to_string(p.cid)) ||
        try_sub("{dir}", p.dir) || try_sub("{socket2}", p.socket2) || try_sub("{uds2}", p.uds2) ||
        try_sub("{cid2}", std::to_string(p.cid2)))
      continue;
    out += command[i++];
  }
  return out;
}

std::optional<std::string> replace_socket_option(const std::string& command, const std::string& option) {
  static constexpr std::string_view kKey = "{socket}";
  const size_t at = command.find(kKey);
  if (at == std::string::npos || command.find(kKey, at + 1) != std::string::npos) return std::nullopt;
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  const size_t after = at + kKey.size();
  if (after < command.size() && !blank(command[after])) return std::nullopt;
  // [start, end): the option's name, before '=' or before the blanks.
  size_t end = at;
  if (at > 0 && command[at - 1] == '=') {
    end = at - 1;
  } else {
    while (end > 0 && blank(command[end - 1])) --end;
    if (end == at) return std::nullopt;  // glued to something that is no option
  }
  size_t start = end;
  while (start > 0 && !blank(command[start - 1])) --start;
  if (end - start < 2 || command[start] != '-') return std::nullopt;
  for (size_t i = start; i < end; ++i) {
    const char c = command[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return std::nullopt;
  }
  return command.substr(0, start) + option + command.substr(after);
}

void Placeholders::set_dir(std::string d) {
  dir = std::move(d);
  socket = dir + "/vhost-user.sock";
  uds = dir + "/vsock.uds";
  socket2 = dir + "/vhost-user-2.sock";
  uds2 = dir + "/vsock-2.uds";
}

namespace {
// `exec COMMAND` through /bin/sh, stdin /dev/null, in a process group of its
// own (so a shell pipeline dies as a whole), signals at their defaults.
// inherit_fd >= 0: it becomes the child's kInheritedFd.
vhu::Result<pid_t> spawn_shell(const std::string& command, int out_fd, int err_fd, int inherit_fd = -1) {
  // dup2 onto the same number would leave close-on-exec set: move it first.
  UniqueFd moved;
  if (inherit_fd == kInheritedFd) {
    moved.reset(::fcntl(inherit_fd, F_DUPFD_CLOEXEC, kInheritedFd + 1));
    if (!moved) return Err(fmt::format("fcntl F_DUPFD_CLOEXEC: {}", std::strerror(errno)));
    inherit_fd = moved.get();
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  if (inherit_fd >= 0) posix_spawn_file_actions_adddup2(&fa, inherit_fd, kInheritedFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  std::string shell_cmd = "exec " + command;
  const char* argv[] = {"/bin/sh", "-c", shell_cmd.c_str(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Err(fmt::format("posix_spawn /bin/sh -c '{}': {}", command, std::strerror(rc)));
  return pid;
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}
// "exited with status 1", "killed by SIGSEGV (core dumped)".
std::string wait_status_text(int st) {
  if (WIFEXITED(st)) return fmt::format("exited with status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return fmt::format("killed by {}{}", signal_name(WTERMSIG(st)), WCOREDUMP(st) ? " (core dumped)" : "");
  return "ended";
}
}  // namespace

vhu::Result<std::unique_ptr<Backend>> Backend::launch(const TargetSpec& spec, uint64_t cid, int listen_fd) {
  std::unique_ptr<Backend> b(new Backend());
  b->spec_ = spec;
  b->listen_fd_ = listen_fd;
  b->ph_.cid = cid;
  b->ph_.cid2 = cid + Placeholders::kSecondCidOffset;
  if (spec.mode != TargetMode::Spawn) {
    b->ph_.socket = spec.path;
    b->ph_.uds = spec.uds;
    b->ph_.cid = spec.cid;
    b->command_ = spec.describe();
    return b;
  }
  // Unix socket paths are limited to 108 bytes: keep the directory short.
  char tmpl[] = "/tmp/vuc-XXXXXX";
  if (!mkdtemp(tmpl)) return Err(fmt::format("mkdtemp: {}", std::strerror(errno)));
  b->remove_dir_ = true;
  b->ph_.set_dir(tmpl);
  b->command_ = substitute(spec.command, b->ph_);

  if (spec.backend_connects) {
    auto l = vhu::listen_unix(b->ph_.socket);
    if (!l) return Err("listening for the back-end on " + b->ph_.socket + ": " + l.message());
    b->own_listener_ = std::move(*l);
    b->listen_fd_ = b->own_listener_.get();
    // Only a command that names {socket2} serves a second VM; it must find a
    // listener there before it starts.
    if (spec.command.find("{socket2}") != std::string::npos) {
      auto l2 = vhu::listen_unix(b->ph_.socket2);
      if (!l2) return Err("listening for the back-end on " + b->ph_.socket2 + ": " + l2.message());
      b->own_listener2_ = std::move(*l2);
    }
  }

  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Err(fmt::format("pipe2: {}", std::strerror(errno)));
  b->stderr_rd_.reset(p[0]);
  UniqueFd wr(p[1]);

  auto pid = spawn_shell(b->command_, wr.get(), wr.get(), spec.inherit_fd);
  if (!pid) return pid.error();
  b->pid_ = *pid;
  wr.reset();
  b->stderr_thread_ = std::thread([bp = b.get()] { bp->read_stderr(); });
  return b;
}

vhu::Result<std::unique_ptr<Backend>> Backend::second_vm() {
  if (owner_) return Err("the second VM has no second VM of its own");
  if (pid_ <= 0 || ph_.socket2.empty())
    return Err("only a back-end the runner spawns has a second VM ({socket2} {uds2} {cid2})");
  if (spec_.backend_connects && !own_listener2_.valid())
    return Err("the back-end connects to its sockets, but its command has no {socket2} for the second VM");
  std::unique_ptr<Backend> b(new Backend());
  b->spec_ = spec_;
  b->listen_fd_ = own_listener2_.valid() ? own_listener2_.get() : -1;  // owned by this one, which outlives the view
  b->owner_ = this;
  b->ph_ = ph_;
  b->ph_.socket = ph_.socket2;
  b->ph_.uds = ph_.uds2;
  b->ph_.cid = ph_.cid2;
  b->command_ = command_ + " (second VM)";
  return b;
}

Backend::~Backend() {
  terminate(500);
  if (stderr_thread_.joinable()) stderr_thread_.join();
  if (remove_dir_) {
    std::error_code ec;
    std::filesystem::remove_all(ph_.dir, ec);
  }
}

void Backend::read_stderr() {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(stderr_rd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(err_mu_);
    err_.append(buf, static_cast<size_t>(n));
    err_total_ += static_cast<uint64_t>(n);
    if (err_.size() > 2 * kStderrKeep) err_.erase(0, err_.size() - kStderrKeep);
  }
  err_closed_ = true;
}

uint64_t Backend::stderr_mark() const {
  std::lock_guard lock(err_mu_);
  return err_total_;
}

std::string Backend::stderr_since(uint64_t mark) const {
  std::lock_guard lock(err_mu_);
  const uint64_t kept_from = err_total_ - err_.size();
  if (mark >= err_total_) return {};
  if (mark < kept_from) return "[... earlier output dropped ...]\n" + err_;
  return err_.substr(static_cast<size_t>(mark - kept_from));
}

bool Backend::wait_stderr_closed(int ms) const {
  if (pid_ <= 0) return true;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!err_closed_) {
    if (std::chrono::steady_clock::now() >= end) return false;
    ::usleep(1000);
  }
  return true;
}

std::string Backend::stderr_text() const {
  if (owner_) return owner_->stderr_text();
  std::lock_guard lock(err_mu_);
  if (err_.size() <= kStderrKeep) return err_;
  return "[... earlier output dropped ...]\n" + err_.substr(err_.size() - kStderrKeep);
}

void Backend::reap(int options) {
  std::lock_guard lock(wait_mu_);
  if (pid_ <= 0 || exited_) return;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, options);
  if (r == pid_) {
    wstatus_ = st;
    exited_ = true;
  }
}

bool Backend::alive() {
  if (owner_) return owner_->alive();
  if (pid_ <= 0) return true;
  reap(WNOHANG);
  return !exited_;
}

bool Backend::crashed() {
  if (owner_) return owner_->crashed();
  if (pid_ <= 0) return false;
  reap(WNOHANG);
  return exited_ && WIFSIGNALED(wstatus_) && !died_of_sent_signal();
}

bool Backend::died_of_sent_signal() const {
  return WIFSIGNALED(wstatus_) && WTERMSIG(wstatus_) < 64 && (signals_sent_.load() & (uint64_t{1} << WTERMSIG(wstatus_)));
}

std::string Backend::status_text() {
  if (owner_) return owner_->status_text();
  if (pid_ <= 0) return "not spawned by the runner";
  reap(WNOHANG);
  if (!exited_) return fmt::format("running (pid {})", pid_);
  return wait_status_text(wstatus_) + (died_of_sent_signal() ? " (sent by the runner)" : "");
}

void Backend::send_signal(int sig) {
  if (pid_ <= 0) return;
  reap(WNOHANG);
  if (exited_) return;
  note_sent(sig);
  ::kill(-pid_, sig);
}

namespace {
// The processes of group `pgid` that have not ended (zombies have), as
// "pid (comm)".
std::vector<std::string> live_group_members(pid_t pgid) {
  std::vector<std::string> out;
  for (const vhu::GroupMember& m : vhu::process_group_members(pgid))
    if (m.state != 'Z' && m.state != 'X') out.push_back(m.label);
  return out;
}
}  // namespace

bool Backend::wait_group_exit(int ms, std::string* left) {
  if (pid_ <= 0) return false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    reap(WNOHANG);
    std::vector<std::string> live;
    if (exited_) live = live_group_members(pid_);
    if (exited_ && live.empty()) return true;
    if (std::chrono::steady_clock::now() >= end) {
      if (left) {
        left->clear();
        if (!exited_) *left = fmt::format("{} (the started process)", pid_);
        for (const auto& m : live) *left += (left->empty() ? "" : ", ") + m;
      }
      return false;
    }
    ::usleep(2000);
  }
}

void Backend::terminate(int grace_ms) {
  if (pid_ <= 0) return;
  reap(WNOHANG);
  if (exited_) {
    // A child it left in its group (one that daemonized by forking) would
    // keep serving the socket and hold our stderr pipe open for ever. A
    // group's id is not reused while it has members, so this reaches only
    // what the back-end left.
    if (!group_killed_) ::kill(-pid_, SIGKILL);
    group_killed_ = true;
    return;
  }
  note_sent(SIGTERM);
  ::kill(-pid_, SIGTERM);
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (std::chrono::steady_clock::now() < end) {
    reap(WNOHANG);
    if (exited_) return;
    ::usleep(2000);
  }
  note_sent(SIGKILL);
  ::kill(-pid_, SIGKILL);
  reap(0);
}

void Backend::kill_now() {
  if (pid_ <= 0 || exited_) return;
  note_sent(SIGKILL);
  ::kill(-pid_, SIGKILL);
}

int Backend::open_fd_count() const {
  if (owner_) return owner_->open_fd_count();
  if (pid_ <= 0) return -1;
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid_), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

vhu::Result<UniqueFd> Backend::connect(int timeout_ms) {
  if (listen_fd_ >= 0) {
    auto c = vhu::accept_unix(listen_fd_, timeout_ms);
    if (!c) {
      if (pid_ > 0 && !alive()) return Err("back-end " + status_text() + " before connecting to " + ph_.socket);
      return Err("no back-end connected to " + ph_.socket + ": " + c.message());
    }
    return c;
  }
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string last;
  for (;;) {
    auto c = vhu::connect_unix(ph_.socket);
    if (c) return c;
    last = c.message();
    if (spawned() && !alive()) {
      // One more try: a back-end that daemonized exits once a child of its
      // own serves the socket (program.no_daemonize reports that, not this).
      if (auto again = vhu::connect_unix(ph_.socket)) return again;
      return Err("back-end " + status_text() + " before accepting a connection on " + ph_.socket);
    }
    if (std::chrono::steady_clock::now() >= end) break;
    ::usleep(spawned() ? 2000 : 20000);
  }
  return Err(fmt::format("could not connect to {} within {} ms: {}", ph_.socket, timeout_ms, last));
}

std::string CommandRun::status_text() const {
  return ended ? wait_status_text(wstatus) : "still running at the time limit (killed)";
}

vhu::Result<CommandRun> run_command(const std::string& command, int timeout_ms) {
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) != 0) return Err(fmt::format("pipe2: {}", std::strerror(errno)));
  UniqueFd out_rd(po[0]), out_wr(po[1]);
  if (pipe2(pe, O_CLOEXEC) != 0) return Err(fmt::format("pipe2: {}", std::strerror(errno)));
  UniqueFd err_rd(pe[0]), err_wr(pe[1]);
  auto pid = spawn_shell(command, out_wr.get(), err_wr.get());
  if (!pid) return pid.error();
  out_wr.reset();
  err_wr.reset();
  CommandRun run;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // Output until both pipes close (or the time is up), then the exit status.
  pollfd fds[2] = {{out_rd.get(), POLLIN, 0}, {err_rd.get(), POLLIN, 0}};
  std::string* into[2] = {&run.out, &run.err};
  int open = 2;
  while (open > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    const int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) break;
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t r = ::read(fds[k].fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        fds[k].fd = -1;
        --open;
        continue;
      }
      if (into[k]->size() < CommandRun::kKeep)
        into[k]->append(buf, std::min(static_cast<size_t>(r), CommandRun::kKeep - into[k]->size()));
    }
  }
  // Its pipes may have closed before it ended, or a child it left may hold
  // them open after: the exit status decides, up to the time limit.
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(*pid, &st, WNOHANG)) == 0 && std::chrono::steady_clock::now() < end) ::usleep(2000);
  // Whatever is left of its group goes, as Backend::terminate() does.
  ::kill(-*pid, SIGKILL);
  if (r == 0) ::waitpid(*pid, nullptr, 0);
  run.ended = r == *pid;
  run.wstatus = st;
  return run;
}

}  // namespace conform
