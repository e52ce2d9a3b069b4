// --fd (vhost-user.rst's back-end program conventions): the socket a
// management layer hands over may be listening (libvirt's virtiofsd) or
// connected (libvirt's vhost-user-gpu, one end of a socketpair); Vm serves
// both, and says which descriptors it cannot serve.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "event_loop.h"
#include "vhu/channel.h"
#include "vhu/messages.h"
#include "vm.h"

namespace vsockref {
namespace {

// GET_FEATURES from the front-end's end, the loop run until the reply comes.
bool answers(EventLoop& loop, int fd) {
  const vhu::Header h{static_cast<uint32_t>(vhu::FrontendReq::GET_FEATURES), 1, 0};
  if (::send(fd, &h, sizeof h, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof h)) return false;
  uint8_t reply[sizeof(vhu::Header) + 8];
  size_t got = 0;
  for (int round = 0; round < 200 && got < sizeof reply; ++round) {
    loop.run_once(10);
    const ssize_t n = ::recv(fd, reply + got, sizeof reply - got, MSG_DONTWAIT);
    if (n == 0) return false;
    if (n > 0) got += static_cast<size_t>(n);
  }
  return got == sizeof reply;
}

VmConfig with_fd(int fd) {
  VmConfig c;
  c.socket_fd = fd;
  return c;
}

TEST(VmFd, ConnectedSocketIsServedAndItsEndIsTheVmsEnd) {
  EventLoop loop;
  auto pair = vhu::socket_pair();
  ASSERT_TRUE(pair.ok());
  Vm vm(loop, with_fd(pair->second.release()), nullptr);
  bool done = false;
  vm.on_done = [&] { done = true; };
  ASSERT_TRUE(vm.start().ok());
  EXPECT_TRUE(answers(loop, pair->first.get()));
  EXPECT_FALSE(done);
  pair->first.reset();
  for (int i = 0; i < 100 && !done; ++i) loop.run_once(10);
  EXPECT_TRUE(done) << "no other front-end can reach a connected --fd socket";
}

TEST(VmFd, ListeningSocketTakesOneFrontEndAfterAnother) {
  const std::string path = ::testing::TempDir() + "vm_fd_listen_" + std::to_string(::getpid()) + ".sock";
  auto l = vhu::listen_unix(path);
  ASSERT_TRUE(l.ok()) << l.message();
  EventLoop loop;
  bool done = false;
  {
    Vm vm(loop, with_fd(l->release()), nullptr);
    vm.on_done = [&] { done = true; };
    ASSERT_TRUE(vm.start().ok());
    for (int i = 0; i < 2; ++i) {
      auto c = vhu::connect_unix(path);
      ASSERT_TRUE(c.ok()) << c.message();
      EXPECT_TRUE(answers(loop, c->get())) << "front-end " << i;
      c->reset();
      for (int j = 0; j < 10; ++j) loop.run_once(5);
    }
  }
  EXPECT_FALSE(done);
  // The path is the management layer's: the VM never created it.
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove(path);
}

TEST(VmFd, WhatIsNotAUnixStreamSocketIsRefusedByName) {
  EventLoop loop;
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::close(p[1]);
  {
    Vm vm(loop, with_fd(p[0]), nullptr);
    auto r = vm.start();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.message().find("--fd " + std::to_string(p[0]) + ": not an open socket"), std::string::npos)
        << r.message();
  }
  ::close(p[0]);
  int d[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, d), 0);
  ::close(d[1]);
  Vm vm(loop, with_fd(d[0]), nullptr);
  auto r = vm.start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("not a Unix stream socket"), std::string::npos) << r.message();
  ::close(d[0]);
}

}  // namespace
}  // namespace vsockref
