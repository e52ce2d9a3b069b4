#include "vhu/vsock.h"

#include <gtest/gtest.h>

namespace vhu::vsock {
namespace {

TEST(Vsock, HeaderIsLittleEndianAt44Bytes) {
  Hdr h;
  h.src_cid = 3;
  h.dst_cid = kHostCid;
  h.src_port = 0x11223344;
  h.dst_port = 1234;
  h.len = 5;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(Op::RW);
  h.flags = kShutdownSend;
  h.buf_alloc = 0x40000;
  h.fwd_cnt = 7;
  auto b = encode(h);
  EXPECT_EQ(b.size(), 44u);
  EXPECT_EQ(b[0], 3);
  EXPECT_EQ(b[8], 2);
  EXPECT_EQ(b[16], 0x44);
  EXPECT_EQ(b[19], 0x11);
  EXPECT_EQ(b[28], 1);  // type
  EXPECT_EQ(b[30], 5);  // op
  EXPECT_EQ(b[38], 0x04);
  auto d = decode(b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, h);
}

TEST(Vsock, RejectsShortHeader) {
  std::array<uint8_t, 43> shorter{};
  auto r = decode(shorter);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("44"), std::string::npos);
}

TEST(Vsock, EventAndConfig) {
  auto e = encode_event(kEventTransportReset);
  EXPECT_EQ(*decode_event(e), 0u);
  EXPECT_FALSE(decode_event(std::span<const uint8_t>(e.data(), 3)).ok());
  auto c = encode_config(0x1234);
  EXPECT_EQ(c[0], 0x34);
  EXPECT_EQ(*decode_config(c), 0x1234u);
  EXPECT_FALSE(decode_config(std::span<const uint8_t>(c.data(), 7)).ok());
}

TEST(Vsock, ReservedCids) {
  for (uint64_t cid : {0ull, 1ull, 2ull, 0xffffffffull, 0xffffffffffffffffull, 0x100000003ull})
    EXPECT_TRUE(is_reserved_cid(cid)) << cid;
  for (uint64_t cid : {3ull, 42ull, 0xfffffffeull}) EXPECT_FALSE(is_reserved_cid(cid)) << cid;
}

TEST(Vsock, OpNames) {
  EXPECT_EQ(op_name(static_cast<uint16_t>(Op::CREDIT_REQUEST)), "CREDIT_REQUEST");
  EXPECT_EQ(op_name(99), "UNKNOWN");
  Hdr h;
  h.op = static_cast<uint16_t>(Op::REQUEST);
  EXPECT_NE(describe(h).find("REQUEST"), std::string::npos);
}

}  // namespace
}  // namespace vhu::vsock
