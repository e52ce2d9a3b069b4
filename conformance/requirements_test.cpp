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

TEST_F(Catalog, ReportQuotesTheJudgedTextWithLevelAndNote) {
  const std::string path = (dir_ / "requirements.xml").string();
  std::ofstream(path) << "<requirements><requirement id=\"R-1\" level=\"SHOULD\" source=\"vhost-user\" "
                         "text=\"both\" section=\"Ring states\"><quote text=\"upstream\">old   words</quote>"
                         "<quote text=\"newest\">new words</quote><note>QEMU differs.</note></requirement>"
                         "<requirement id=\"R-2\" level=\"MUST\" source=\"vhost-user\" text=\"newest\" "
                         "section=\"s\"><quote>only new</quote></requirement></requirements>";
  const Requirements reqs = Requirements::load(path);
  const std::string up = requirements_report(reqs, {"R-1", "R-9"}, vhu::SpecText::Upstream);
  EXPECT_NE(up.find("R-1 (SHOULD; vhost-user, Ring states)"), std::string::npos) << up;
  EXPECT_NE(up.find("\"old words\""), std::string::npos) << up;
  EXPECT_EQ(up.find("new words"), std::string::npos) << up;
  EXPECT_NE(up.find("note: QEMU differs."), std::string::npos) << up;
  EXPECT_NE(up.find("R-9: not in"), std::string::npos) << up;
  const std::string nw = requirements_report(reqs, {"R-1", "R-2"}, vhu::SpecText::Newest);
  EXPECT_NE(nw.find("\"new words\""), std::string::npos) << nw;
  EXPECT_EQ(nw.find("old words"), std::string::npos) << nw;
  EXPECT_NE(nw.find("R-2 (MUST; vhost-user, newest text only, s)"), std::string::npos) << nw;
  EXPECT_NE(nw.find("\"only new\""), std::string::npos) << nw;
}

}  // namespace
}  // namespace conform
