// Per-upstream counters, the top-K of repositories and the traffic history behind the status
// page.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "cache/metrics.h"
#include "cache/top_counter.h"
#include "cache/traffic_history.h"
#include "cache/upstream_set.h"

namespace regcache::cache {
namespace {

TEST(MetricsTest, CountsPerUpstreamBesideTheTotals) {
  Metrics m;
  UpstreamStats* hub = m.ForUpstream("hub");
  UpstreamStats* ghcr = m.ForUpstream("ghcr");
  EXPECT_EQ(m.ForUpstream("hub"), hub);  // one block per name
  m.Request("blob", "hit", hub);
  m.Request("blob", "hit", hub);
  m.Request("manifest", "revalidated", hub);
  m.Request("blob", "miss", hub);
  m.Request("manifest", "negative", ghcr);  // a remembered 404 is also counted as an error:
  m.Request("manifest", "error", ghcr);     // it is one request, not two
  m.Request("manifest", "hit");             // no upstream: totals only
  m.Served(hub, 1000);
  m.Fetched(hub, 250);
  m.Served(nullptr, 7);

  EXPECT_EQ(hub->Requests(), 4u);
  EXPECT_EQ(hub->Hits(), 3u);
  EXPECT_EQ(ghcr->Requests(), 1u);
  EXPECT_EQ(ghcr->Hits(), 0u);
  EXPECT_EQ(m.Get("regcache_requests_total", "kind=\"blob\",result=\"hit\""), 2u);
  EXPECT_EQ(m.Get("regcache_requests_total", "kind=\"manifest\",result=\"hit\""), 1u);
  EXPECT_EQ(m.bytes_served.load(), 1007u);
  EXPECT_EQ(m.bytes_fetched.load(), 250u);
  EXPECT_EQ(hub->bytes_served.load(), 1000u);

  const std::string text = m.Render();
  // The existing series keep their names; the per-upstream ones are added beside them.
  EXPECT_NE(text.find("regcache_requests_total{kind=\"blob\",result=\"hit\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("regcache_requests_by_upstream_total{upstream=\"hub\",kind=\"blob\","
                      "result=\"hit\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("regcache_bytes_served_by_upstream_total{upstream=\"hub\"} 1000\n"),
            std::string::npos);
  EXPECT_NE(text.find("regcache_bytes_fetched_by_upstream_total{upstream=\"hub\"} 250\n"),
            std::string::npos);
  EXPECT_NE(text.find("regcache_bytes_served_total 1007\n"), std::string::npos);
  auto names = m.Upstreams();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].first, "ghcr");
  EXPECT_EQ(names[1].second, hub);
}

TEST(MetricsTest, UpstreamsCountIntoTheirNamedBlock) {
  Metrics m;
  UpstreamConfig a{"a", "https://a.io"};
  auto set = UpstreamSet::Create({a}, "", &m);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ((*set)->Find("a")->stats(), m.ForUpstream("a"));
  auto without = UpstreamSet::Create({a}, "", nullptr);
  ASSERT_TRUE(without.ok());
  ASSERT_NE((*without)->Find("a")->stats(), nullptr);  // its own block
  EXPECT_NE((*without)->Find("a")->stats(), m.ForUpstream("a"));
}

TEST(TopCounterTest, ExactWhileUnderCapacity) {
  TopCounter top(4);
  for (int i = 0; i < 5; ++i) top.Add("a");
  for (int i = 0; i < 3; ++i) top.Add("b");
  top.Add("c");
  auto t = top.Top(10);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].key, "a");
  EXPECT_EQ(t[0].count, 5u);
  EXPECT_EQ(t[0].error, 0u);
  EXPECT_EQ(t[1].key, "b");
  EXPECT_EQ(t[2].key, "c");
  EXPECT_EQ(top.Top(1).size(), 1u);
}

TEST(TopCounterTest, KeepsTheFrequentKeysOfALongTailInBoundedMemory) {
  TopCounter top(8);
  std::map<std::string, uint64_t> truth;
  // Three popular repositories among 5000 requested once each, interleaved.
  for (int i = 0; i < 5000; ++i) {
    const std::string rare = "rare/" + std::to_string(i);
    top.Add(rare);
    ++truth[rare];
    for (const char* hot : {"library/ruby", "library/alpine", "org/app"}) {
      if (i % (hot[0] == 'o' ? 4 : 2) == 0) {
        top.Add(hot);
        ++truth[hot];
      }
    }
  }
  auto t = top.Top(3);
  ASSERT_EQ(t.size(), 3u);
  std::set<std::string> keys;
  for (const auto& e : t) {
    keys.insert(e.key);
    // Space-Saving's guarantee: count - error <= true count <= count.
    EXPECT_LE(e.count - e.error, truth[e.key]) << e.key;
    EXPECT_GE(e.count, truth[e.key]) << e.key;
  }
  EXPECT_EQ(keys, (std::set<std::string>{"library/ruby", "library/alpine", "org/app"}));
  EXPECT_EQ(top.Top(100).size(), 8u);  // never more than its capacity
}

TEST(TrafficHistoryTest, BoundedRingAndDeltas) {
  TrafficHistory h(3);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    TrafficHistory::Sample s;
    s.at = t0 + std::chrono::seconds(15 * i);
    s.upstreams.push_back({"hub", {uint64_t(10 * i), uint64_t(5 * i), uint64_t(100 * i), 0}});
    if (i >= 3) s.upstreams.push_back({"ghcr", {4, 1, 0, 64}});
    h.Add(std::move(s));
  }
  auto samples = h.Samples();
  ASSERT_EQ(samples.size(), 3u);  // the oldest two dropped
  EXPECT_EQ(samples.front().at, t0 + std::chrono::seconds(30));
  auto d = TrafficHistory::Delta(samples[0], samples[1], "hub");
  EXPECT_EQ(d.requests, 10u);
  EXPECT_EQ(d.hits, 5u);
  EXPECT_EQ(d.bytes_served, 100u);
  // An upstream that appears counts from zero; one absent from the later sample did nothing.
  d = TrafficHistory::Delta(samples[0], samples[1], "ghcr");
  EXPECT_EQ(d.requests, 4u);
  EXPECT_EQ(d.bytes_fetched, 64u);
  EXPECT_EQ(TrafficHistory::Delta(samples[1], samples[0], "nobody").requests, 0u);
}

}  // namespace
}  // namespace regcache::cache
