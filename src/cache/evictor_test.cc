#include "cache/evictor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "metadata/corrupt_for_test.h"

namespace regcache::cache {
namespace {

TEST(StorageSizeTest, Units) {
  StorageLimits l;
  ASSERT_TRUE(ParseStorageSize("96MiB", &l).ok());
  EXPECT_EQ(l.max_bytes, 96ull << 20);
  EXPECT_EQ(l.max_percent, 0);
  ASSERT_TRUE(ParseStorageSize("20GiB", &l).ok());
  EXPECT_EQ(l.max_bytes, 20ull << 30);
  ASSERT_TRUE(ParseStorageSize("1TB", &l).ok());
  EXPECT_EQ(l.max_bytes, 1000000000000ull);
  ASSERT_TRUE(ParseStorageSize("4096", &l).ok());
  EXPECT_EQ(l.max_bytes, 4096u);
  ASSERT_TRUE(ParseStorageSize("80%", &l).ok());
  EXPECT_EQ(l.max_bytes, 0u);
  EXPECT_EQ(l.max_percent, 80);
  for (const char* bad : {"", "0", "-1GiB", "12 parsecs", "101%", "0%", "99999999999999TiB"}) {
    EXPECT_FALSE(ParseStorageSize(bad, &l).ok()) << bad;
  }
}

class EvictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regcache-evict-XXXXXX";
    dir_ = mkdtemp(tmpl);
    blobs_ = storage::OpenFilesystemBlobStore(dir_).value();
    meta_ = metadata::OpenSqliteMetadataStore(dir_ + "/meta.db").value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  oci::Digest Put(const std::string& content) {
    auto d = oci::Digest::Of(content);
    EXPECT_TRUE(blobs_->PutSmall(d, content).ok());
    return d;
  }

  std::string dir_;
  std::unique_ptr<storage::BlobStore> blobs_;
  std::unique_ptr<metadata::MetadataStore> meta_;
  Metrics metrics_;
};

TEST_F(EvictorTest, KeepsCommittedBytesUnderTheCapAndSavesTheLedger) {
  // The metadata database counts against the cap: blobs large next to its few pages, so that
  // its growth while the test runs (a page or two) does not change what is evicted.
  const uint64_t unit = 100000;
  StorageLimits limits;
  limits.max_bytes = 10 * unit + meta_->FileBytes();
  limits.max_percent = 0;
  limits.min_free_percent = 0;
  limits.interval = std::chrono::milliseconds(20);
  BlobLedger ledger;
  Evictor evictor(*blobs_, *meta_, ledger, metrics_, limits);
  // On disk before start: found by the reconciliation scan.
  auto pre = Put(std::string(3 * unit, 'p'));
  ASSERT_TRUE(evictor.Start().ok());
  const uint64_t low = limits.max_bytes * 9 / 10;
  auto used = [&] { return ledger.bytes() + meta_->FileBytes(); };
  std::vector<oci::Digest> layers;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(evictor.Reserve(3 * unit));
    layers.push_back(Put(std::string(3 * unit, static_cast<char>('a' + i))));
    ledger.Added(layers.back(), 3 * unit, false);
    evictor.Release(3 * unit);
    if (i == 0) {
      for (int k = 0; k < 5; ++k) ledger.Touched(layers[0]);  // popular
    }
  }
  for (int i = 0; i < 100 && ledger.bytes() > low; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_LE(ledger.bytes(), low);       // evicted down to the low watermark
  EXPECT_LE(used(), limits.max_bytes);  // and the cap holds, metadata included
  EXPECT_TRUE(blobs_->Stat(layers[0])->has_value()) << "the popular blob stays";
  uint64_t on_disk = 0;
  ASSERT_TRUE(blobs_->Scan([&](const oci::Digest&, uint64_t n) { on_disk += n; }).ok());
  EXPECT_EQ(on_disk, ledger.bytes());
  EXPECT_GT(metrics_.Get("regcache_evictions_total", "reason=\"size\""), 0u);
  EXPECT_GT(metrics_.metadata_bytes.load(), 0);
  EXPECT_EQ(metrics_.store_bytes.load(),
            static_cast<int64_t>(ledger.bytes()) + metrics_.metadata_bytes.load());
  EXPECT_FALSE(evictor.Reserve(20 * unit)) << "bigger than the cap: served without storing";
  evictor.Stop();

  // A new process finds the same ledger.
  BlobLedger again;
  Evictor second(*blobs_, *meta_, again, metrics_, limits);
  ASSERT_TRUE(second.Start().ok());
  EXPECT_EQ(again.bytes(), ledger.bytes());
  second.Stop();
  (void)pre;
}

TEST_F(EvictorTest, ReconcilesAfterACrashBetweenUnlinkAndSave) {
  StorageLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_percent = 0;
  limits.min_free_percent = 0;
  auto a = Put("aaaa"), b = Put("bbbbbb");
  ASSERT_TRUE(meta_->SaveBlobUsage({{a, 4, false, 1, 1}, {b, 6, false, 1, 1}}, {}).ok());
  ASSERT_TRUE(blobs_->Remove(b).ok());  // evicted, then killed before the ledger was saved
  auto c = Put("ccc");                  // committed, then killed before the ledger was saved
  BlobLedger ledger;
  Evictor evictor(*blobs_, *meta_, ledger, metrics_, limits);
  ASSERT_TRUE(evictor.Start().ok());
  for (int i = 0; i < 100 && !(ledger.Contains(c) && !ledger.Contains(b)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(ledger.Contains(a));
  EXPECT_FALSE(ledger.Contains(b));
  EXPECT_TRUE(ledger.Contains(c));
  EXPECT_EQ(ledger.bytes(), 7u);
  evictor.Stop();
}

constexpr const char* kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

// A stored image: a config blob (JSON too), a layer, and a docker v2 manifest over them whose
// media type the metadata store records, as a pull leaves them.
struct StoredImage {
  oci::Digest config, layer, manifest;
};

class RebuildTest : public EvictorTest {
 protected:
  StoredImage PutImage() {
    const std::string config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{}}";
    const std::string layer(5000, '\x1f');
    StoredImage image{Put(config), Put(layer), {}};
    image.manifest =
        Put("{\"schemaVersion\":2,\"mediaType\":\"" + std::string(kDockerManifest) +
            "\",\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\","
            "\"digest\":\"" +
            image.config.str() + "\",\"size\":" + std::to_string(config.size()) +
            "},\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
            "\"digest\":\"" +
            image.layer.str() + "\",\"size\":" + std::to_string(layer.size()) + "}]}");
    EXPECT_TRUE(meta_->PutManifestType(image.manifest, kDockerManifest).ok());
    return image;
  }

  static StorageLimits Roomy() {
    StorageLimits limits;
    limits.max_bytes = 1 << 30;
    limits.max_percent = 0;
    limits.min_free_percent = 0;
    limits.interval = std::chrono::milliseconds(20);
    return limits;
  }

  // Waits (up to 2 s) until `done` holds.
  static bool Eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 200 && !done(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }

  int UsageRows() {
    int rows = 0;
    EXPECT_TRUE(meta_->LoadBlobUsage([&](const metadata::BlobUsage&) { ++rows; }).ok());
    return rows;
  }
};

TEST_F(RebuildTest, UsageAndManifestTypesComeBackWhenTheDatabaseWasReplacedAtOpen) {
  StoredImage image = PutImage();
  meta_.reset();
  ASSERT_TRUE(metadata::testing::OverwritePage(dir_ + "/meta.db", 1));  // not a database now
  meta_ = metadata::OpenSqliteMetadataStore(dir_ + "/meta.db").value();
  ASSERT_EQ(meta_->Replacements(), 1u);
  ASSERT_FALSE(meta_->GetManifestType(image.manifest).value().has_value());

  BlobLedger ledger;
  Evictor evictor(*blobs_, *meta_, ledger, metrics_, Roomy());
  ASSERT_TRUE(evictor.Start().ok());
  EXPECT_TRUE(Eventually([&] { return ledger.IsManifest(image.manifest); }))
      << "never evicted for size, as before the loss";
  EXPECT_FALSE(ledger.IsManifest(image.config));
  EXPECT_EQ(meta_->GetManifestType(image.manifest).value(),
            std::optional<std::string>(kDockerManifest));
  EXPECT_FALSE(meta_->GetManifestType(image.config).value().has_value())
      << "a config blob is JSON too";
  EXPECT_FALSE(meta_->GetManifestType(image.layer).value().has_value());
  EXPECT_EQ(metrics_.Get("regcache_metadata_rebuilds_total", ""), 1u);
  evictor.Stop();
  EXPECT_EQ(UsageRows(), 3);
}

TEST_F(RebuildTest, UsageAndManifestTypesComeBackWhenTheDatabaseIsReplacedWhileServing) {
  StoredImage image = PutImage();
  BlobLedger ledger;
  Evictor evictor(*blobs_, *meta_, ledger, metrics_, Roomy());
  ASSERT_TRUE(evictor.Start().ok());
  ASSERT_TRUE(Eventually([&] { return ledger.IsManifest(image.manifest); }));
  const std::string path = dir_ + "/meta.db";
  ASSERT_TRUE(metadata::testing::CorruptLivePage(
      path, metadata::testing::RootPage(path, "manifest_types"),
      "INSERT INTO backing_work VALUES (2, 'c/hub/a', 'sha256:00', '', 0)"));
  // The lookup that meets the damage gets its answer from the new, empty database.
  EXPECT_FALSE(meta_->GetManifestType(image.manifest).value().has_value());
  EXPECT_EQ(meta_->Replacements(), 1u);
  EXPECT_TRUE(Eventually([&] {
    return meta_->GetManifestType(image.manifest).value() ==
           std::optional<std::string>(kDockerManifest);
  }));
  evictor.Stop();
  EXPECT_EQ(UsageRows(), 3) << "every usage row saved again";
}

}  // namespace
}  // namespace regcache::cache
