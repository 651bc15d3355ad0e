// Filesystem implementation of BlobStore.
#pragma once

#include <atomic>

#include "storage/blob_store.h"

namespace regcache::storage {

class FsBlobStore : public BlobStore {
 public:
  explicit FsBlobStore(std::string root);
  Status Init();

  Result<std::optional<uint64_t>> Stat(const oci::Digest& digest) override;
  Result<int> Open(const oci::Digest& digest) override;
  Result<std::string> ReadAll(const oci::Digest& digest, size_t max_bytes) override;
  Result<std::unique_ptr<BlobWriter>> Ingest(const oci::Digest& digest) override;
  Status PutSmall(const oci::Digest& digest, const std::string& bytes) override;
  Status Remove(const oci::Digest& digest) override;
  Status Scan(const std::function<void(const oci::Digest&, uint64_t size)>& found) override;
  Result<Space> FilesystemSpace() override;

  std::string PathFor(const oci::Digest& digest) const;

 private:
  std::string root_;
  std::atomic<uint64_t> temp_counter_{0};
};

}  // namespace regcache::storage
