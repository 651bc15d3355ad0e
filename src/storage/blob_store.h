// Content-addressed blob storage, in the small roles the cache composes: stat, open, ingest.
// Manifests are stored here too (they are content-addressed bytes like any blob).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "oci/digest.h"

namespace regcache::storage {

// A blob being written. Bytes go to a temp file that no reader of the store can see; Commit makes
// the blob visible atomically (fsync + rename), Abort (or destruction without Commit) deletes it.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  // Appends; kIoError (e.g. disk full) leaves the writer unusable and nothing visible.
  virtual Status Write(const char* data, size_t size) = 0;
  virtual uint64_t written() const = 0;
  // Path of the temp file, for readers that follow a blob while it is being written.
  virtual const std::string& temp_path() const = 0;
  // Makes the blob visible under its digest. The caller has verified the digest of what it
  // wrote (the upstream client hashes as it streams); Commit checks the size and does not re-hash.
  virtual Status Commit(uint64_t expected_size) = 0;
  virtual void Abort() = 0;
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // Size of a committed blob, nullopt if absent.
  virtual Result<std::optional<uint64_t>> Stat(const oci::Digest& digest) = 0;
  // A read-only descriptor of a committed blob (caller closes); kNotFound if absent.
  virtual Result<int> Open(const oci::Digest& digest) = 0;
  // Reads a whole committed blob (manifests; never layers).
  virtual Result<std::string> ReadAll(const oci::Digest& digest, size_t max_bytes) = 0;
  // Starts writing a blob.
  virtual Result<std::unique_ptr<BlobWriter>> Ingest(const oci::Digest& digest) = 0;
  // Writes small verified content (manifests) in one go: temp file, fsync, rename.
  virtual Status PutSmall(const oci::Digest& digest, const std::string& bytes) = 0;
  // Deletes a committed blob (eviction). Readers that already opened it keep reading it (the
  // bytes go when the last descriptor closes). Absent blobs are not an error.
  virtual Status Remove(const oci::Digest& digest) = 0;
  // Calls `found` for every committed blob with its size (start-up reconciliation); files whose
  // names are not digests are skipped.
  virtual Status Scan(const std::function<void(const oci::Digest&, uint64_t size)>& found) = 0;

  struct Space {
    uint64_t total = 0;      // size of the filesystem holding the store
    uint64_t available = 0;  // bytes an unprivileged writer may still use
  };
  virtual Result<Space> FilesystemSpace() = 0;
};

// Whether a failed write was the file system running out of space.
bool IsNoSpace(const Status& status);

// Filesystem store under `root`: blobs/<algo>/<2 hex>/<hex>, temp files in tmp/. Creating it
// removes whatever a crash left in tmp/.
Result<std::unique_ptr<BlobStore>> OpenFilesystemBlobStore(const std::string& root);

}  // namespace regcache::storage
