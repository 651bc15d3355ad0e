#include "cache/hot_index.h"

#include <gtest/gtest.h>

namespace regcache::cache {
namespace {

TEST(HotIndexTest, StaysWithinItsLimits) {
  HotIndex hot(HotIndexLimits{100, 100, 4096});
  for (int i = 0; i < 1000; ++i) {
    hot.PutTag(HotIndex::Key("hub", "a/b", std::string("t").append(std::to_string(i))),
               metadata::TagRecord{oci::Digest::Of("x"), "t", 1, 1, 1});
    hot.PutLink(HotIndex::Key("hub", "a/b", std::to_string(i)), 5);
  }
  int tags = 0, links = 0;
  for (int i = 0; i < 1000; ++i) {
    tags += hot.GetTag(HotIndex::Key("hub", "a/b", std::string("t").append(std::to_string(i)))).has_value();
    links += hot.GetLink(HotIndex::Key("hub", "a/b", std::to_string(i))).has_value();
  }
  EXPECT_LE(tags, 100);
  EXPECT_LE(links, 100);
  EXPECT_GT(tags, 0);
  // The last one put is always there.
  EXPECT_TRUE(hot.GetTag(HotIndex::Key("hub", "a/b", "t999")).has_value());

  int kept = 0;
  for (int i = 0; i < 100; ++i) {
    auto m = std::make_shared<CachedManifest>(CachedManifest{std::string(500, 'x'), "t"});
    auto d = oci::Digest::Of(std::to_string(i));
    hot.PutManifest(d, m);
    ASSERT_NE(hot.GetManifest(d), nullptr);  // just put: present
  }
  for (int i = 0; i < 100; ++i) kept += hot.GetManifest(oci::Digest::Of(std::to_string(i))) != nullptr;
  EXPECT_LE(kept * 500, 4096);
}

TEST(HotIndexTest, LinkSizeFirstKnownWins) {
  HotIndex hot;
  auto key = HotIndex::Key("hub", "a/b", "sha256:x");
  hot.PutLink(key, 0);
  hot.PutLink(key, 10);
  hot.PutLink(key, 99);
  EXPECT_EQ(hot.GetLink(key), std::optional<uint64_t>(10));
}

}  // namespace
}  // namespace regcache::cache
