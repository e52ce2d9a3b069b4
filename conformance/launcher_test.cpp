#include "launcher.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <string>
#include <utility>

#include "case.h"
#include "profiles.h"
#include "runner.h"
#include "vhu/channel.h"

namespace conform {
namespace {

Placeholders sample() {
  Placeholders p;
  p.dir = "/tmp/d";
  p.socket = "/tmp/d/a.sock";
  p.uds = "/tmp/d/a.uds";
  p.cid = 7;
  p.socket2 = "/tmp/d/b.sock";
  p.uds2 = "/tmp/d/b.uds";
  p.cid2 = 1007;
  return p;
}

// A back-end the runner starts; one that connects finds the runner listening.
TargetSpec spawn_spec(std::string command, bool backend_connects = false) {
  TargetSpec t;
  t.mode = TargetMode::Spawn;
  t.command = std::move(command);
  t.backend_connects = backend_connects;
  return t;
}

TEST(Substitute, EveryPlaceholder) {
  EXPECT_EQ(substitute("be --socket {socket} --uds-path {uds} --guest-cid {cid} -C {dir}", sample()),
            "be --socket /tmp/d/a.sock --uds-path /tmp/d/a.uds --guest-cid 7 -C /tmp/d");
  EXPECT_EQ(substitute("--vm guest-cid={cid2},socket={socket2},uds-path={uds2}", sample()),
            "--vm guest-cid=1007,socket=/tmp/d/b.sock,uds-path=/tmp/d/b.uds");
}

TEST(Substitute, FirstVmNamesDoNotSwallowSecond) {
  // {socket} is a prefix of {socket2} but for the brace: each must stay itself.
  EXPECT_EQ(substitute("{socket}{socket2}{uds}{uds2}{cid}{cid2}", sample()),
            "/tmp/d/a.sock/tmp/d/b.sock/tmp/d/a.uds/tmp/d/b.uds71007");
}

TEST(Substitute, OtherTextUntouched) {
  EXPECT_EQ(substitute("{socket3} {cid {} }{", sample()), "{socket3} {cid {} }{");
  EXPECT_EQ(substitute("", sample()), "");
}

TEST(ReplaceSocketOption, TheOptionThatGivesTheSocketIsReplacedWhole) {
  EXPECT_EQ(replace_socket_option("be --socket {socket} --uds-path {uds}", "--fd=3"), "be --fd=3 --uds-path {uds}");
  EXPECT_EQ(replace_socket_option("be --socket-path={socket} -o x", "--socket-path={socket}"),
            "be --socket-path={socket} -o x");
  EXPECT_EQ(replace_socket_option("be -s\t{socket}", "--fd=3"), "be --fd=3");
  EXPECT_EQ(replace_socket_option("be --vm guest-cid={cid} --socket {socket}", "--fd=3"),
            "be --vm guest-cid={cid} --fd=3");
}

TEST(ReplaceSocketOption, NoneWhereTheSocketIsNoOptionsWholeValue) {
  for (const char* command : {"testpmd --vdev net_vhost0,iface={socket},queues=1",  // part of a word
                              "qsd --export type=vhost-user-blk,addr.path={socket}",  // key=, not an option
                              "be --socket {socket} --socket {socket}",               // twice
                              "be {socket}",                                         // no option before it
                              "be --socket={socket}.x",                              // a longer word
                              "sh -c 'be --socket {socket}'",                        // quoted: a shell's word
                              "be --socket {socket2}",                               // not {socket}
                              "{socket}", "= {socket}", "- {socket}"}) {
    EXPECT_EQ(replace_socket_option(command, "--fd=3"), std::nullopt) << command;
  }
}

TEST(Profiles, RefHasTwoVmTemplateWithSpecPassedThrough) {
  auto one = profile_target("ref", "/bin", vhu::SpecText::Newest);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->command.find("{socket2}"), std::string::npos);
  auto two = profile_target("ref", "/bin", vhu::SpecText::Newest, true);
  ASSERT_TRUE(two);
  EXPECT_EQ(two->mode, TargetMode::Spawn);
  EXPECT_EQ(two->command.rfind("/bin/vhost-user-vsock-ref ", 0), 0u) << two->command;
  EXPECT_NE(two->command.find("--spec newest"), std::string::npos) << two->command;
  for (const char* key : {"{socket}", "{uds}", "{cid}", "{socket2}", "{uds2}", "{cid2}"})
    EXPECT_NE(two->command.find(key), std::string::npos) << key << " in " << two->command;
}

TEST(Profiles, NoTwoVmTemplateElsewhere) {
  EXPECT_TRUE(profile_target("dpdk", "/bin", vhu::SpecText::Upstream));
  EXPECT_FALSE(profile_target("dpdk", "/bin", vhu::SpecText::Upstream, true));
  EXPECT_FALSE(profile_target("nonesuch", "/bin", vhu::SpecText::Upstream, true));
}

TEST(Backend, SecondVmOfASpawnedBackend) {
  auto b = Backend::launch(spawn_spec("sleep 30"), 5);
  ASSERT_TRUE(b) << b.message();
  const Placeholders& p = (*b)->placeholders();
  EXPECT_EQ(p.cid2, 5 + Placeholders::kSecondCidOffset);
  EXPECT_NE(p.socket2, p.socket);
  EXPECT_NE(p.uds2, p.uds);
  auto v = (*b)->second_vm();
  ASSERT_TRUE(v) << v.message();
  EXPECT_EQ((*v)->placeholders().socket, p.socket2);
  EXPECT_EQ((*v)->placeholders().uds, p.uds2);
  EXPECT_EQ((*v)->placeholders().cid, p.cid2);
  // The process is the first Backend's: the view reports it, and stopping it
  // through the view is impossible.
  EXPECT_TRUE((*v)->spawned());
  EXPECT_EQ((*v)->pid(), (*b)->pid());
  (*v)->terminate(10);
  EXPECT_TRUE((*b)->alive());
  (*b)->terminate(1000);
  EXPECT_FALSE((*v)->alive());
}

// A back-end that daemonizes: the started process exits 0 and leaves a child
// in its group. Stopping the back-end must take the child too, or it would
// live on, and the stderr pipe it holds would never close (the Backend's
// destructor waits for it).
TEST(Backend, TerminateTakesWhatAnExitedProcessLeftInItsGroup) {
  auto b = Backend::launch(spawn_spec("sh -c 'echo $$ > {dir}/child.pid; exec sleep 30' & exit 0"), 5);
  ASSERT_TRUE(b) << b.message();
  const std::string pidfile = (*b)->placeholders().dir + "/child.pid";
  pid_t child = 0;
  for (int i = 0; i < 2000 && child <= 0; ++i) {
    std::ifstream in(pidfile);
    if (!(in >> child)) child = 0;
    if (child <= 0) ::usleep(1000);
  }
  ASSERT_GT(child, 0) << "no " << pidfile;
  for (int i = 0; i < 2000 && (*b)->alive(); ++i) ::usleep(1000);
  ASSERT_FALSE((*b)->alive());
  EXPECT_EQ((*b)->status_text(), "exited with status 0");
  (*b)->terminate(10);
  // Killed: gone, or a zombie until whoever inherited it reaps it.
  bool gone = false;
  for (int i = 0; i < 2000 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
    std::string pid, comm, state;
    gone = !(stat >> pid >> comm >> state) || state == "Z";
    if (!gone) ::usleep(1000);
  }
  EXPECT_TRUE(gone) << "pid " << child << " outlived terminate()";
  if (!gone) ::kill(child, SIGKILL);
}

// send_signal reaches the started process (through its group), and its end
// is ours: not a crash.
TEST(Backend, SignalSentByTheRunnerIsNoCrash) {
  auto b = Backend::launch(spawn_spec("sleep 30"), 5);
  ASSERT_TRUE(b) << b.message();
  EXPECT_FALSE((*b)->wait_group_exit(20, nullptr));
  (*b)->send_signal(SIGTERM);
  std::string left;
  ASSERT_TRUE((*b)->wait_group_exit(2000, &left)) << left;
  EXPECT_FALSE((*b)->crashed());
  EXPECT_NE((*b)->status_text().find("SIGTERM"), std::string::npos) << (*b)->status_text();
}

// A back-end that dies of a signal the runner never sent crashed, even when
// the runner's SIGTERM was on its way: one that segfaults as the case ends
// closes its socket before the runner can reap it, and used to pass for
// killed by the runner.
TEST(Backend, OwnSignalAfterTheRunnersSigtermIsACrash) {
  auto b = Backend::launch(
      spawn_spec("sh -c 'trap \"trap - SEGV; kill -SEGV $$\" TERM; while :; do sleep 0.01; done'"), 5);
  ASSERT_TRUE(b) << b.message();
  ::usleep(100 * 1000);  // the shell sets its trap
  (*b)->terminate(2000);
  EXPECT_TRUE((*b)->crashed()) << (*b)->status_text();
  EXPECT_NE((*b)->status_text().find("SIGSEGV"), std::string::npos) << (*b)->status_text();
  EXPECT_EQ((*b)->status_text().find("sent by the runner"), std::string::npos) << (*b)->status_text();
}

// The signal goes to the group, and the wait is for the whole group: a
// command that ends while what it started ignores SIGTERM has not ended.
TEST(Backend, GroupWaitNamesWhatIgnoredTheSignal) {
  auto b = Backend::launch(spawn_spec("sh -c 'trap \"\" TERM; exec sleep 30' & exec sleep 30"), 5);
  ASSERT_TRUE(b) << b.message();
  ::usleep(100 * 1000);  // the background shell sets its trap
  (*b)->send_signal(SIGTERM);
  std::string left;
  EXPECT_FALSE((*b)->wait_group_exit(300, &left));
  EXPECT_FALSE((*b)->alive());  // the started process itself did end
  EXPECT_NE(left.find("(sleep)"), std::string::npos) << left;
  (*b)->terminate(10);
  EXPECT_TRUE((*b)->wait_group_exit(2000, &left)) << left;
}

// The inherited descriptor is the back-end's kInheritedFd, whatever number
// it had in the runner, that one included.
TEST(Backend, InheritedDescriptorArrivesAsKInheritedFd) {
  for (int n : {kInheritedFd, 20}) {
    auto pair = vhu::socket_pair();
    ASSERT_TRUE(pair.ok());
    vhu::UniqueFd theirs = std::move(pair->second);
    if (theirs.get() != n) {
      vhu::UniqueFd at(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, n));
      if (n == kInheritedFd && at.get() != n) continue;  // that number is taken: nothing to show
      theirs = std::move(at);
    }
    TargetSpec t = spawn_spec(fmt::format("echo hello >&{}", kInheritedFd));
    t.inherit_fd = theirs.get();
    auto b = Backend::launch(t, 5);
    ASSERT_TRUE(b) << b.message();
    theirs.reset();
    char buf[16] = {};
    ASSERT_EQ(::recv(pair->first.get(), buf, 6, MSG_WAITALL), 6) << "fd " << n;
    EXPECT_EQ(std::string(buf, 6), "hello\n");
  }
}

// A back-end that connects to its sockets finds the runner listening on
// both, and each VM's connection is accepted on its own socket.
TEST(Backend, SecondVmOfABackendThatConnects) {
  auto b = Backend::launch(spawn_spec("sleep 30 # {socket} {socket2}", true), 5);
  ASSERT_TRUE(b) << b.message();
  auto v = (*b)->second_vm();
  ASSERT_TRUE(v) << v.message();
  auto second = vhu::connect_unix((*b)->placeholders().socket2);
  ASSERT_TRUE(second) << second.message();
  EXPECT_FALSE((*b)->connect(50)) << "the first VM accepted the second VM's connection";
  auto accepted = (*v)->connect(1000);
  ASSERT_TRUE(accepted) << accepted.message();
  auto first = vhu::connect_unix((*b)->placeholders().socket);
  ASSERT_TRUE(first) << first.message();
  EXPECT_TRUE((*b)->connect(1000));
  (*b)->terminate(1000);
}

TEST(Backend, NoSecondVmForAConnectingCommandWithoutSocket2) {
  auto b = Backend::launch(spawn_spec("sleep 30 # {socket}", true), 5);
  ASSERT_TRUE(b) << b.message();
  auto v = (*b)->second_vm();
  ASSERT_FALSE(v);
  EXPECT_NE(v.message().find("{socket2}"), std::string::npos) << v.message();
  (*b)->terminate(1000);
}

TEST(Backend, NoSecondVmWithoutSpawn) {
  TargetSpec t;
  t.mode = TargetMode::Connect;
  t.path = "/nonexistent.sock";
  auto b = Backend::launch(t, 3);
  ASSERT_TRUE(b) << b.message();
  EXPECT_FALSE((*b)->second_vm());
}

// A sibling case runs on the sibling target and sees the second VM's values;
// every other case keeps the one-VM target.
TEST(Runner, SiblingCasesUseTheTwoVmTarget) {
  RunConfig cfg;
  cfg.target.mode = TargetMode::Spawn;
  cfg.target.command = "sleep 30 # one-vm";
  TargetSpec two;
  two.mode = TargetMode::Spawn;
  two.command = "sleep 30 # two-vm {socket2} {uds2} {cid2}";
  cfg.sibling_target = two;

  std::string seen;
  CaseInfo plain{.id = "t.plain", .requirements = {"X"}, .summary = "s"};
  plain.body = [&](Ctx& ctx) { seen = ctx.backend().command_line(); };
  CaseResult r = run_one(plain, cfg, 9);
  EXPECT_EQ(r.verdict, Verdict::Pass) << r.message;
  EXPECT_NE(seen.find("one-vm"), std::string::npos) << seen;

  uint64_t sib_cid = 0;
  std::string sib_uds;
  CaseInfo sib{.id = "t.sib", .requirements = {"X"}, .summary = "s", .siblings = true};
  sib.body = [&](Ctx& ctx) {
    seen = ctx.backend().command_line();
    sib_cid = ctx.sibling().cid();
    sib_uds = ctx.sibling().host().uds();
  };
  r = run_one(sib, cfg, 9);
  EXPECT_EQ(r.verdict, Verdict::Pass) << r.message;
  EXPECT_NE(seen.find("two-vm"), std::string::npos) << seen;
  EXPECT_EQ(sib_cid, 9 + Placeholders::kSecondCidOffset);
  EXPECT_NE(seen.find(sib_uds), std::string::npos) << seen;
  EXPECT_NE(seen.find(" 1009"), std::string::npos) << seen;
}

TEST(Runner, SiblingCaseSkippedWithoutTwoVmTarget) {
  RunConfig cfg;
  cfg.target.mode = TargetMode::Spawn;
  cfg.target.command = "exit 1";  // must not even be started
  bool ran = false;
  CaseInfo sib{.id = "t.sib", .requirements = {"X"}, .summary = "s", .siblings = true};
  sib.body = [&](Ctx&) { ran = true; };
  CaseResult r = run_one(sib, cfg, 3);
  EXPECT_EQ(r.verdict, Verdict::Skip);
  EXPECT_FALSE(ran);
  EXPECT_NE(r.message.find("--spawn-siblings"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("{socket2}"), std::string::npos) << r.message;
}

}  // namespace
}  // namespace conform
