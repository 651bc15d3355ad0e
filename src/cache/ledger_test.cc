#include "cache/ledger.h"

#include <gtest/gtest.h>

namespace regcache::cache {
namespace {

oci::Digest D(const std::string& name) { return oci::Digest::Of(name); }

TEST(BlobLedgerTest, EvictsLeastFrequentFirstAndNeverManifests) {
  BlobLedger ledger;
  ledger.Added(D("base"), 100, false);
  ledger.Added(D("own"), 100, false);
  ledger.Added(D("manifest"), 1, true);
  for (int i = 0; i < 5; ++i) ledger.Touched(D("base"));  // a shared base layer
  EXPECT_EQ(ledger.bytes(), 201u);
  EXPECT_EQ(ledger.blobs(), 3u);
  auto victims = ledger.ChooseVictims(50);
  ASSERT_EQ(victims.size(), 1u);
  EXPECT_EQ(victims[0].digest, D("own"));
  ledger.Removed(victims[0].digest);
  EXPECT_EQ(ledger.bytes(), 101u);
  // Asking for more than is evictable returns what there is, never the manifest.
  victims = ledger.ChooseVictims(1000);
  ASSERT_EQ(victims.size(), 1u);
  EXPECT_EQ(victims[0].digest, D("base"));
}

TEST(BlobLedgerTest, AgingLetsOncePopularBlobsGo) {
  BlobLedger ledger;
  ledger.Added(D("old-favourite"), 10, false);
  for (int i = 0; i < 3; ++i) ledger.Touched(D("old-favourite"));  // H = 0 + 4
  // Many new blobs come and go; each eviction raises the aging value.
  for (int round = 0; round < 6; ++round) {
    std::string name = "new" + std::to_string(round);
    ledger.Added(D(name), 10, false);
    ledger.Touched(D(name));
    auto v = ledger.ChooseVictims(10);
    ASSERT_EQ(v.size(), 1u);
    ledger.Removed(v[0].digest);
  }
  // The favourite, untouched all along, is the lowest priority by now.
  ledger.Added(D("fresh"), 10, false);
  ledger.Touched(D("fresh"));
  EXPECT_FALSE(ledger.Contains(D("old-favourite")));
}

TEST(BlobLedgerTest, ChangesAreTakenOnceAndLoadIsNotAChange) {
  BlobLedger ledger;
  ledger.Load(metadata::BlobUsage{D("a"), 5, false, 100, 3});
  ledger.Added(D("b"), 7, false);
  ledger.Touched(D("b"));
  ledger.Added(D("c"), 9, false);
  ledger.Removed(D("c"));
  std::vector<metadata::BlobUsage> up;
  std::vector<oci::Digest> removed;
  ledger.TakeChanges(&up, &removed);
  ASSERT_EQ(up.size(), 1u);
  EXPECT_EQ(up[0].digest, D("b"));
  EXPECT_EQ(up[0].hits, 2u);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0], D("c"));
  up.clear();
  removed.clear();
  ledger.TakeChanges(&up, &removed);
  EXPECT_TRUE(up.empty());
  EXPECT_TRUE(removed.empty());
  EXPECT_EQ(ledger.bytes(), 12u);
}

}  // namespace
}  // namespace regcache::cache
