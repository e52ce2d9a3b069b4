#include "vhu/scm_rights.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <tuple>

#include "vhu/channel.h"

namespace vhu {
namespace {

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  if (fstat(a, &sa) != 0 || fstat(b, &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

struct Sockets {
  UniqueFd a, b;
  Sockets() {
    auto sp = socket_pair();
    EXPECT_TRUE(sp.ok());
    if (sp.ok()) std::tie(a, b) = std::move(*sp);
  }
};

TEST(ScmRights, FdsArriveWithTheirBytesAsNewCloseOnExecFds) {
  Sockets s;
  UniqueFd e1(eventfd(0, 0)), e2(eventfd(0, 0));
  const int raw[] = {e1.get(), e2.get()};
  const uint8_t bytes[] = {1, 2, 3};
  ASSERT_EQ(send_with_fds(s.a.get(), bytes, raw, 0), 3);
  uint8_t buf[8] = {};
  std::vector<UniqueFd> got;
  bool ctrunc = false;
  ASSERT_EQ(recv_with_fds(s.b.get(), buf, got, MSG_DONTWAIT, &ctrunc), 3);
  EXPECT_FALSE(ctrunc);
  EXPECT_EQ(buf[2], 3);
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NE(got[i].get(), raw[i]);
    EXPECT_TRUE(same_file(got[i].get(), raw[i])) << i;
    EXPECT_TRUE(fcntl(got[i].get(), F_GETFD) & FD_CLOEXEC) << i;
  }
}

TEST(ScmRights, ReceivedFdsAreAppended) {
  Sockets s;
  UniqueFd e(eventfd(0, 0));
  const int raw[] = {e.get()};
  const uint8_t one[] = {7};
  std::vector<UniqueFd> got;
  got.emplace_back(eventfd(0, 0));
  ASSERT_EQ(send_with_fds(s.a.get(), one, raw, 0), 1);
  uint8_t buf[1];
  ASSERT_EQ(recv_with_fds(s.b.get(), buf, got, 0), 1);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(same_file(got[1].get(), e.get()));
}

TEST(ScmRights, AllTheKernelAllowsCanBeReceivedInOneMessage) {
  Sockets s;
  UniqueFd e(eventfd(0, 0));
  std::vector<int> raw(kScmMaxFd, e.get());
  const uint8_t one[] = {7};
  ASSERT_EQ(send_with_fds(s.a.get(), one, raw, 0), 1) << std::strerror(errno);
  uint8_t buf[1];
  std::vector<UniqueFd> got;
  bool ctrunc = false;
  ASSERT_EQ(recv_with_fds(s.b.get(), buf, got, 0, &ctrunc), 1);
  EXPECT_FALSE(ctrunc);
  EXPECT_EQ(got.size(), kScmMaxFd);
}

TEST(ScmRights, RefusesMoreThanTheKernelTakesOrFdsWithoutAByte) {
  Sockets s;
  UniqueFd e(eventfd(0, 0));
  std::vector<int> raw(kScmMaxFd + 1, e.get());
  const uint8_t one[] = {7};
  errno = 0;
  EXPECT_EQ(send_with_fds(s.a.get(), one, raw, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(send_with_fds(s.a.get(), {}, std::span<const int>(raw).first(1), 0), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(ScmRights, AFailedReceiveKeepsItsErrnoAndAddsNoFd) {
  Sockets s;
  uint8_t buf[1];
  std::vector<UniqueFd> got;
  errno = 0;
  EXPECT_EQ(recv_with_fds(s.b.get(), buf, got, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_TRUE(got.empty());
}

TEST(ScmRights, BytesWithoutFdsTravelAlone) {
  Sockets s;
  const uint8_t bytes[] = {4, 5};
  ASSERT_EQ(send_with_fds(s.a.get(), bytes, {}, 0), 2);
  uint8_t buf[4];
  std::vector<UniqueFd> got;
  ASSERT_EQ(recv_with_fds(s.b.get(), buf, got, 0), 2);
  EXPECT_TRUE(got.empty());
}

}  // namespace
}  // namespace vhu
