// The status page's HTML: figures, escaping, charts, and what it costs to render.
#include "http/status_page.h"

#include <gtest/gtest.h>

#include <chrono>
#include <regex>

namespace regcache::http {
namespace {

using cache::TrafficHistory;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// An hour of samples every 15 s for `upstreams`, each with steady traffic, ending now.
std::vector<TrafficHistory::Sample> Hour(const std::vector<std::string>& upstreams) {
  std::vector<TrafficHistory::Sample> h;
  const auto now = std::chrono::steady_clock::now();
  for (int i = 0; i <= 240; ++i) {
    TrafficHistory::Sample s;
    s.at = now - std::chrono::seconds(15 * (240 - i));
    for (const auto& u : upstreams) {
      const uint64_t n = static_cast<uint64_t>(i);
      s.upstreams.push_back({u, {10 * n, 7 * n, (1u << 20) * n, (300u << 10) * n}});
    }
    h.push_back(std::move(s));
  }
  return h;
}

StatusSnapshot Example() {
  StatusSnapshot s;
  s.version = "1.2.3";
  s.uptime_s = 3 * 3600 + 125;
  s.generated_at = "2024-01-01 00:00:00 UTC";
  StatusSnapshot::Upstream hub;
  hub.name = "docker.io";
  hub.is_default = true;
  hub.requests = 12;
  hub.hits = 9;
  hub.misses = 2;
  hub.errors = 1;
  hub.bytes_served = 5 << 20;
  hub.bytes_fetched = 1 << 20;
  hub.rate_limit = {100, 76, 21600, "203.0.113.7"};
  StatusSnapshot::Upstream ghcr;
  ghcr.name = "ghcr.io";
  ghcr.breaker = cache::CircuitBreaker::State::kOpen;
  ghcr.retry_after_s = 42;
  s.upstreams = {hub, ghcr};
  cache::FillProgress f;
  f.upstream = "docker.io";
  f.repository = "library/ruby";
  f.digest = oci::Digest::Parse("sha256:" + std::string(64, 'c')).value();
  f.bytes = 300;
  f.size = 1000;
  s.fills = {f};
  s.fills_in_flight = 1;
  s.store_bytes = 3 << 20;
  s.store_blobs = 4;
  s.store_cap_bytes = 12 << 20;
  s.most_pulled = {{"docker.io", "library/ruby", 7, 0}, {"docker.io", "<script>x</script>", 2, 1}};
  s.history = Hour({"docker.io", "ghcr.io"});
  return s;
}

TEST(StatusPageTest, ShowsTheFiguresPerUpstream) {
  const std::string html = RenderStatusPage(Example());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<tr data-upstream=\"docker.io\">"), std::string::npos);
  EXPECT_NE(html.find("<data value=\"0.7500\">75.0%</data>"), std::string::npos);  // 9 of 12
  // Served from cache: 5 MiB served less 1 MiB fetched.
  EXPECT_NE(html.find("<td class=\"num from-cache\"><data value=\"4194304\">4.0 MiB</data>"),
            std::string::npos);
  EXPECT_NE(html.find("<td class=\"num fetched\"><data value=\"1048576\">1.0 MiB</data>"),
            std::string::npos);
  EXPECT_NE(html.find("76</data> of 100 per 6 h<"), std::string::npos);
  EXPECT_NE(html.find("data-breaker=\"open\">&#9675; open: not contacted for 42 s"),
            std::string::npos);
  EXPECT_NE(html.find("<progress max=\"1000\" value=\"300\"></progress>"), std::string::npos);
  EXPECT_NE(html.find("3.0 MiB</data></div><div class=\"dim\">4 blobs of 12.0 MiB (25%)"),
            std::string::npos);
  EXPECT_NE(html.find("<span id=\"version\">1.2.3</span>"), std::string::npos);
  EXPECT_NE(html.find("3 h 2 min"), std::string::npos);
  EXPECT_NE(html.find("<tr data-repository=\"library/ruby\">"), std::string::npos);
}

TEST(StatusPageTest, EscapesEverythingFromOutsideAndHasNoScript) {
  StatusSnapshot s = Example();
  s.upstreams[0].name = "a\"b'<c>&d";
  s.upstreams[0].rate_limit.source = "<img src=x onerror=alert(1)>";
  s.fills[0].repository = "<b>repo</b>";
  const std::string html = RenderStatusPage(s);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("<b>repo"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;x&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("a&quot;b&#39;&lt;c&gt;&amp;d"), std::string::npos);
  EXPECT_EQ(HtmlEscape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  // Nothing is loaded from elsewhere.
  EXPECT_EQ(html.find(" src=\""), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

TEST(StatusPageTest, ChartsAnHourOfSamples) {
  const std::string html = RenderStatusPage(Example());
  EXPECT_EQ(Count(html, "<svg"), 2u);
  EXPECT_NE(html.find("id=\"chart-hit-ratio\""), std::string::npos);
  EXPECT_NE(html.find("id=\"chart-traffic\""), std::string::npos);
  // 240 intervals per upstream: 70% hits each; long series get a dot on the last point only.
  EXPECT_NE(html.find("data-series=\"docker.io\" data-points=\"240\""), std::string::npos);
  EXPECT_NE(html.find("data-series=\"docker.io\" data-value=\"70.0000\""), std::string::npos);
  // Traffic: 1 MiB per 15 s per upstream served (two upstreams), 300 KiB per 15 s fetched.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      html, m, std::regex("data-series=\"served to clients \\(all upstreams\\)\" data-value=\"([0-9.]+)\"")));
  EXPECT_NEAR(std::stod(m[1]), 2.0 * (1 << 20) / 15, 1);
  ASSERT_TRUE(std::regex_search(
      html, m, std::regex("data-series=\"fetched from ghcr.io\" data-value=\"([0-9.]+)\"")));
  EXPECT_NEAR(std::stod(m[1]), 300.0 * 1024 / 15, 1);
  EXPECT_NE(html.find(">&minus;60 min</text>"), std::string::npos);
  EXPECT_NE(html.find(">now</text>"), std::string::npos);
  EXPECT_NE(html.find(">100%</text>"), std::string::npos);
  EXPECT_NE(html.find(">150 KiB/s</text>"), std::string::npos);  // the axis' top: 136.5 KiB/s
}

TEST(StatusPageTest, EmptyHistorySaysSoAndAShortOneHasDots) {
  StatusSnapshot s = Example();
  s.history.resize(1);
  std::string html = RenderStatusPage(s);
  EXPECT_EQ(Count(html, "<svg"), 2u);
  EXPECT_EQ(Count(html, "<circle"), 0u);
  EXPECT_NE(html.find("no traffic yet"), std::string::npos);
  s.history = Hour({"docker.io"});
  s.history.erase(s.history.begin(), s.history.end() - 4);  // three intervals
  html = RenderStatusPage(s);
  EXPECT_EQ(Count(html, "<circle class=\"point\""), 3u * 3);  // ratio, served, fetched
  EXPECT_EQ(html.find("data-series=\"ghcr.io\""), std::string::npos);  // idle: not drawn
}

TEST(StatusPageTest, RendersAFullHourForSixUpstreamsQuickly) {
  StatusSnapshot s = Example();
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) names.push_back("upstream-" + std::to_string(i));
  const StatusSnapshot::Upstream first = s.upstreams[0];
  s.upstreams.assign(6, first);
  for (int i = 0; i < 6; ++i) s.upstreams[i].name = names[i];
  s.history = Hour(names);
  const cache::FillProgress fill = s.fills[0];
  s.fills.assign(20, fill);
  const int rounds = 20;
  auto start = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (int i = 0; i < rounds; ++i) bytes += RenderStatusPage(s).size();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - start)
                .count() /
            rounds;
  std::printf("status page: %zu bytes, %lld us per render (6 upstreams, a full hour)\n",
              bytes / rounds, static_cast<long long>(us));
  EXPECT_LT(bytes / rounds, 200u * 1024);
  EXPECT_LT(us, 20000);  // generous for a loaded CI machine and sanitizers
}

}  // namespace
}  // namespace regcache::http
