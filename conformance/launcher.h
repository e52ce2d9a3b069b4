// Where the back-end under test comes from: one already listening
// (--connect), a fresh process per case (--spawn), or one that connects to us
// (--listen, or --spawn with --backend-connects).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "vhu/result.h"
#include "vhu/unique_fd.h"

namespace conform {

enum class TargetMode { Connect, Spawn, Listen };

// The descriptor number a spawned back-end finds TargetSpec::inherit_fd at.
// Not 3: libvirt hands a descriptor over at whatever number it has, while 3
// is where systemd's socket activation puts the first one, so a back-end that
// takes 3 for granted instead of reading --fd=FDNUM would pass with 3.
constexpr int kInheritedFd = 7;

struct TargetSpec {
  TargetMode mode = TargetMode::Spawn;
  std::string path;     // Connect / Listen: the socket path
  std::string command;  // Spawn: shell command with {socket} {uds} {cid} {dir}, and
                        // {socket2} {uds2} {cid2} for a back-end serving a second VM
  bool backend_connects = false;  // Spawn: the back-end is the client on {socket}
  // Spawn: this descriptor of the runner's becomes the back-end's kInheritedFd,
  // as a management layer hands a socket over with --fd (-1: none).
  int inherit_fd = -1;
  std::string device = "vsock";   // device type the cases may drive
  int start_timeout_ms = 5000;    // until the spawned back-end accepts a connection
  // --connect/--listen: the host side of hybrid vsock, when the user names it.
  std::string uds;
  uint64_t cid = 3;

  std::string describe() const;
};

// Fresh per-case values substituted into a spawn command. The *2 values name
// a second VM of the same back-end process, for the cases that need a sibling
// (CaseInfo::siblings); a one-VM command simply does not use them.
struct Placeholders {
  // The second VM's CID is the first one's plus this: distinct, never reserved.
  static constexpr uint64_t kSecondCidOffset = 1000;

  // `d` and the socket paths inside it that a spawned back-end gets.
  void set_dir(std::string d);

  std::string dir;
  std::string socket;
  std::string uds;
  uint64_t cid = 3;
  std::string socket2;
  std::string uds2;
  uint64_t cid2 = 3 + kSecondCidOffset;
};
std::string substitute(const std::string& command, const Placeholders& p);

// The command template with the option that gives {socket} replaced by
// `option` (which may name {socket} itself): `-x {socket}` and `--xx={socket}`
// qualify, one word each. nullopt when {socket} is part of another word
// (`iface={socket},queues=1`), appears more than once, or follows no option:
// then the socket cannot be handed over another way without knowing the
// program.
std::optional<std::string> replace_socket_option(const std::string& command, const std::string& option);

// A command run once to its end, as a management layer runs a back-end with
// --print-capabilities: stdout and stderr kept apart (each up to kKeep bytes),
// stdin /dev/null, its own process group, killed with that group when it
// outlives timeout_ms.
struct CommandRun {
  static constexpr size_t kKeep = 64 * 1024;
  bool ended = false;  // false: killed at the time limit
  int wstatus = 0;
  std::string out;
  std::string err;
  std::string status_text() const;
};
vhu::Result<CommandRun> run_command(const std::string& command, int timeout_ms);

// The back-end a case talks to. For Spawn it owns the process: stderr is kept
// (last 64 KiB), the exit status or signal recorded, a hung one killed.
class Backend {
 public:
  static constexpr size_t kStderrKeep = 64 * 1024;

  // Starts (Spawn) or prepares (Connect, Listen). Error: it could not be started.
  static vhu::Result<std::unique_ptr<Backend>> launch(const TargetSpec& spec, uint64_t cid,
                                                      int listen_fd = -1);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // A new front-end connection. Spawn: waits until the back-end listens
  // (retrying connect) or fails when it exits first.
  vhu::Result<vhu::UniqueFd> connect(int timeout_ms);

  // The second VM of a spawned back-end, as a Backend of its own: connect()
  // reaches {socket2}, placeholders() are {socket2} {uds2} {cid2}, and the
  // process state (alive, crashed, status) is this one's. It does not own the
  // process and must not outlive this object. Error unless spawned.
  vhu::Result<std::unique_ptr<Backend>> second_vm();

  const Placeholders& placeholders() const { return ph_; }
  const std::string& command_line() const { return command_; }
  bool spawned() const { return owner_ ? owner_->spawned() : pid_ > 0; }
  pid_t pid() const { return owner_ ? owner_->pid() : pid_; }
  // Still running? Reaps it when it has exited.
  bool alive();
  // Exited on its own by a signal we did not send.
  bool crashed();
  // "running", "exited with status 1", "killed by signal 11 (SIGSEGV)".
  std::string status_text();
  std::string stderr_text() const;
  // Bytes of stderr read so far, and what came after such a mark (as much of
  // it as is still kept): what one fuzz input made the back-end print.
  uint64_t stderr_mark() const;
  std::string stderr_since(uint64_t mark) const;
  // Waits up to ms for the back-end's stderr to end (it exited), so a
  // sanitizer report printed while dying is read in full. True when it ended.
  bool wait_stderr_closed(int ms) const;
  // SIGTERM, up to grace_ms for it to end, then SIGKILL. Idempotent. What
  // is left of its process group after it ended is killed too.
  void terminate(int grace_ms = 1000);
  // `sig` to the started process's group, so that a command wrapping the
  // back-end (sh -c '...') passes it on; its end then counts as ours, not a
  // crash.
  void send_signal(int sig);
  // Up to ms for the started process and everything in its group to end.
  // True when they have; else *left names what still runs ("pid (comm)").
  bool wait_group_exit(int ms, std::string* left);
  // From another thread: SIGKILL now (hung back-end / case over its time).
  void kill_now();
  // Number of open fds of the spawned process (/proc), or -1.
  int open_fd_count() const;

 private:
  Backend() = default;
  void reap(int options);
  void read_stderr();

  TargetSpec spec_;
  Placeholders ph_;
  std::string command_;
  pid_t pid_ = -1;
  std::atomic<bool> exited_{false};
  // One bit per signal the runner sent the group: a death by any other
  // (SIGSEGV while the runner's SIGTERM was on its way) is the back-end's own.
  std::atomic<uint64_t> signals_sent_{0};
  void note_sent(int sig) { signals_sent_.fetch_or(uint64_t{1} << sig); }
  bool died_of_sent_signal() const;
  bool group_killed_ = false;
  int wstatus_ = 0;
  std::mutex wait_mu_;
  vhu::UniqueFd stderr_rd_;
  std::thread stderr_thread_;
  mutable std::mutex err_mu_;
  std::string err_;  // ring of the last kStderrKeep bytes
  uint64_t err_total_ = 0;
  std::atomic<bool> err_closed_{false};
  int listen_fd_ = -1;          // Listen mode: shared listener, not owned
  vhu::UniqueFd own_listener_;   // Spawn + backend_connects
  vhu::UniqueFd own_listener2_;  // the same for {socket2}, the second VM's
  bool remove_dir_ = false;
  Backend* owner_ = nullptr;  // second_vm(): the process belongs to this one
};

}  // namespace conform
