// Holds the one request and protocol-feature table to the spec texts in
// ../shared/spec-sources: bit numbers have drifted in real libraries, so the
// table is checked against the documents rather than trusted.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <cstdlib>
#include <sstream>
#include <string>

#include "vhu/features.h"
#include "vhu/messages.h"

namespace vhu {
namespace {

std::string spec_path(const char* file) { return std::string(VHU_SPEC_SOURCES) + "/" + file; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct SpecIds {
  std::map<uint32_t, std::string> frontend, backend;
  std::map<unsigned, std::string> protocol_features;
};

// "``VHOST_USER_NAME``..." -> "NAME", else empty.
std::string heading_name(const std::string& line) {
  const std::string open = "``VHOST_USER_";
  if (line.rfind(open, 0) != 0) return {};
  const size_t end = line.find("``", open.size());
  return end == std::string::npos ? std::string{} : line.substr(open.size(), end - open.size());
}

// "  :id: N" -> N, else -1.
long id_value(const std::string& line) {
  const size_t at = line.find(":id:");
  if (at == std::string::npos || line.find_first_not_of(' ') != at) return -1;
  return std::strtol(line.c_str() + at + 4, nullptr, 10);
}

// Reads "``VHOST_USER_NAME``" headings followed by ":id: N" in the two
// message-type sections, and the VHOST_USER_PROTOCOL_F_* defines. (No
// std::regex: g++ 12 warns inside it at -O2 with sanitizers.)
SpecIds parse_spec(const std::string& text) {
  SpecIds ids;
  std::istringstream in(text);
  std::string line, pending;
  enum { kNone, kFront, kBack } section = kNone;
  const std::string define = "#define VHOST_USER_PROTOCOL_F_";
  while (std::getline(in, line)) {
    if (line == "Front-end message types") section = kFront;
    if (line == "Back-end message types") section = kBack;
    if (line.rfind("For the message types that already solicit", 0) == 0) section = kNone;
    if (size_t at = line.find(define); at != std::string::npos) {
      std::istringstream def(line.substr(at + define.size()));
      std::string name;
      unsigned bit;
      if (def >> name >> bit) ids.protocol_features[bit] = name;
    }
    if (section == kNone) continue;
    if (std::string name = heading_name(line); !name.empty()) {
      pending = name;
    } else if (long id = id_value(line); !pending.empty() && id >= 0) {
      auto& map = section == kFront ? ids.frontend : ids.backend;
      map[static_cast<uint32_t>(id)] = pending;
      pending.clear();
    }
  }
  return ids;
}

struct SpecCase {
  const char* file;
  SpecText text;
};

void PrintTo(const SpecCase& c, std::ostream* os) { *os << c.file; }

class SpecTable : public ::testing::TestWithParam<SpecCase> {
 protected:
  void SetUp() override {
    const std::string t = read_file(spec_path(GetParam().file));
    if (t.empty()) GTEST_SKIP() << "spec text not found: " << spec_path(GetParam().file);
    ids_ = parse_spec(t);
    ASSERT_GT(ids_.frontend.size(), 40u) << "parser found too few front-end requests";
  }
  bool in_scope(SpecText t) const { return t == SpecText::Upstream || GetParam().text == SpecText::Newest; }
  SpecIds ids_;
};

TEST_P(SpecTable, EveryFrontendRequestMatchesTheSpec) {
  for (const auto& [id, name] : ids_.frontend) {
    const RequestInfo* info = request_info(Plane::Frontend, id);
    ASSERT_NE(info, nullptr) << "spec id " << id << " (" << name << ") missing from the table";
    EXPECT_EQ(info->name, name) << "id " << id;
  }
  for (const auto& r : all_requests(Plane::Frontend))
    if (in_scope(r.text)) {
      EXPECT_TRUE(ids_.frontend.count(r.id)) << r.name << " is not in " << GetParam().file;
    }
}

TEST_P(SpecTable, EveryBackendRequestMatchesTheSpec) {
  for (const auto& [id, name] : ids_.backend) {
    const RequestInfo* info = request_info(Plane::Backend, id);
    ASSERT_NE(info, nullptr) << "spec back-end id " << id << " (" << name << ") missing from the table";
    EXPECT_EQ(info->name, name) << "id " << id;
  }
  for (const auto& r : all_requests(Plane::Backend))
    if (in_scope(r.text)) {
      EXPECT_TRUE(ids_.backend.count(r.id)) << r.name << " is not in " << GetParam().file;
    }
}

TEST_P(SpecTable, EveryProtocolFeatureMatchesTheSpec) {
  ASSERT_FALSE(ids_.protocol_features.empty());
  for (const auto& [bit, name] : ids_.protocol_features) {
    EXPECT_EQ(protocol_feature_name(bit), name) << "bit " << bit;
    EXPECT_TRUE(in_scope(protocol_feature_text(bit))) << name;
  }
  for (unsigned b = 0; b < 64; ++b)
    if (protocol_feature_known(b) && in_scope(protocol_feature_text(b))) {
      EXPECT_TRUE(ids_.protocol_features.count(b)) << protocol_feature_name(b) << " not in " << GetParam().file;
    }
}

INSTANTIATE_TEST_SUITE_P(Texts, SpecTable,
                         ::testing::Values(SpecCase{"vhost-user.qemu-upstream-f6b615b.rst", SpecText::Upstream},
                                           SpecCase{"vhost-user.rst", SpecText::Newest}),
                         [](const auto& info) {
                           return info.param.text == SpecText::Upstream ? std::string("Upstream")
                                                                        : std::string("Newest");
                         });

TEST(SpecTable, IssueNamedIds) {
  EXPECT_EQ(static_cast<uint32_t>(FrontendReq::SET_DEVICE_STATE_FD), 42u);
  EXPECT_EQ(static_cast<uint32_t>(FrontendReq::CHECK_DEVICE_STATE), 43u);
  EXPECT_EQ(protocol_feature::REPLY_ACK, 3u);
  EXPECT_EQ(protocol_feature::CONFIG, 9u);
  EXPECT_EQ(protocol_feature::CONFIGURE_MEM_SLOTS, 15u);
  EXPECT_EQ(protocol_feature::STATUS, 16u);
  EXPECT_EQ(protocol_feature::DEVICE_STATE, 19u);
  EXPECT_EQ(feature::RING_INDIRECT_DESC, 28u);
  EXPECT_EQ(feature::RING_EVENT_IDX, 29u);
  EXPECT_EQ(feature::VHOST_USER_F_PROTOCOL_FEATURES, 30u);
  EXPECT_EQ(feature::VERSION_1, 32u);
  EXPECT_EQ(feature::ACCESS_PLATFORM, 33u);
  EXPECT_EQ(feature::RING_PACKED, 34u);
  EXPECT_EQ(feature::IN_ORDER, 35u);
  EXPECT_EQ(feature::VSOCK_F_STREAM, 0u);
  EXPECT_EQ(feature::VSOCK_F_SEQPACKET, 1u);
  EXPECT_EQ(feature::VSOCK_F_NO_IMPLIED_STREAM, 2u);
}

TEST(SpecTable, IdsAreUnique) {
  for (Plane p : {Plane::Frontend, Plane::Backend}) {
    std::map<uint32_t, int> seen;
    for (const auto& r : all_requests(p)) EXPECT_EQ(++seen[r.id], 1) << r.name;
  }
}

}  // namespace
}  // namespace vhu
