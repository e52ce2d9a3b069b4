#include "requirements.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace conform {
namespace {

namespace fs = std::filesystem;

// A catalog of one requirement in a directory of its own, with a guest run
// beside it, as spec/requirements.xml and spec/guest-runs/ are laid out.
class Catalog : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("conform-req-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_ / "guest-runs");
    std::ofstream(dir_ / "guest-runs" / "run.txt") << "# how it was recorded\nE2E: FAIL step: recvmsg:   No buffer\n"
                                                   << "space available\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> check(const std::string& level, const std::string& source, const std::string& quote) {
    const std::string path = (dir_ / "requirements.xml").string();
    std::ofstream(path) << "<requirements><requirement id=\"R-1\" level=\"" << level << "\" source=\"" << source
                        << "\" text=\"run.txt\" section=\"s\"><quote>" << quote
                        << "</quote></requirement></requirements>";
    const Requirements reqs = Requirements::load(path);
    const std::vector<CaseInfo> cases{CaseInfo{.id = "area.name", .requirements = {"R-1"}}};
    return check_traceability(reqs, cases);  // no spec sources: a guest run is checked all the same
  }

  fs::path dir_;
};

TEST_F(Catalog, GuestRunQuoteIsFoundBesideTheCatalog) {
  EXPECT_TRUE(check("CONVENTION", "guest", "E2E: FAIL step: recvmsg: No buffer space available").empty());
}

TEST_F(Catalog, GuestRunQuoteThatTheRunDoesNotHoldIsAProblem) {
  const auto bad = check("CONVENTION", "guest", "E2E: PASS step");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("quote not found verbatim"), std::string::npos) << bad[0];
  EXPECT_NE(bad[0].find("guest-runs/run.txt"), std::string::npos) << bad[0];
}

TEST_F(Catalog, ConventionMustCiteATraceOrAGuestRun) {
  const auto bad = check("CONVENTION", "virtio", "anything");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("a CONVENTION must cite"), std::string::npos) << bad[0];
}

TEST_F(Catalog, UnknownSourceIsAProblem) {
  const auto bad = check("SHOULD", "folklore", "anything");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("unknown source 'folklore'"), std::string::npos) << bad[0];
}

}  // namespace
}  // namespace conform
