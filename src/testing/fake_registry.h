// An in-memory OCI registry and a RegistryClient talking to it, for fast unit tests of the code
// that talks to registries (the backing tier, the pull-through cache, the copier): no process,
// no socket, no sleep.
//
// The registry models what the code under test depends on, the way distribution behaves:
//   - blob data is stored once per digest; a repository *links* the digests it holds. A blob
//     DELETE removes the link; the data stays unless Options::delete_removes_data. An upload of
//     a digest whose data exists keeps the old data (distribution never overwrites it).
//   - manifests are stored as the exact bytes put, by digest, and tags point at digests.
//   - anything can be put in place directly (PutBlobData with bytes that do not hash to the
//     digest: a corrupt copy in the bucket).
// Failures are scripted per operation (FailNext), and every call is counted (Calls).
// Thread-safe: the code under test calls from its own threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/digest.h"
#include "upstream/registry_client.h"

namespace regcache::testing {

// The RegistryClient calls, for scripting and counting.
enum class Op {
  kHeadManifest,
  kGetManifest,
  kStatBlob,
  kGetBlob,  // GetBlob and FetchBlob
  kStartUpload,
  kCompleteUpload,
  kDeleteBlob,
  kPutManifest,
  kListTags,
  kGetRaw,
};

struct FakeRegistryOptions {
  bool delete_removes_data = false;  // false: distribution's behaviour (unlink only)
  bool deletes_enabled = true;       // false: DELETE answers 405 (kUnsupported)
};

class FakeRegistry {
 public:
  using Options = FakeRegistryOptions;
  explicit FakeRegistry(std::string name = "fake.registry", Options options = {})
      : name_(std::move(name)), options_(options) {}

  const std::string& name() const { return name_; }

  // ---- content, put in place without going through a client ----
  // Stores `bytes` as the data of `digest` (whether or not they hash to it) and links it.
  void PutBlobData(const std::string& repo, const oci::Digest& digest, std::string bytes);
  // Stores the blob under its own digest and links it; returns the digest.
  oci::Digest PutBlob(const std::string& repo, const std::string& bytes);
  // Stores a manifest's exact bytes, optionally under a tag; returns its digest.
  oci::Digest PutManifest(const std::string& repo, const std::string& media_type,
                          const std::string& bytes, const std::string& tag = "");
  void Tag(const std::string& repo, const std::string& tag, const oci::Digest& digest);

  // ---- what is there ----
  bool Links(const std::string& repo, const oci::Digest& digest) const;
  std::optional<std::string> BlobData(const oci::Digest& digest) const;
  std::optional<std::string> ManifestBytes(const std::string& repo, const std::string& ref) const;

  // ---- scripting ----
  // The next `times` calls of `op` fail with `status`, before touching anything.
  void FailNext(Op op, Status status, int times = 1);
  int Calls(Op op) const;

  std::unique_ptr<upstream::RegistryClient> NewClient();

 private:
  friend class FakeRegistryClient;
  struct Manifest {
    std::string media_type;
    std::string bytes;
  };
  struct Repository {
    std::set<std::string> blobs;                // linked digests
    std::map<std::string, Manifest> manifests;  // by digest
    std::map<std::string, std::string> tags;    // tag -> digest
  };
  // Counts the call and returns its scripted failure, if any.
  std::optional<Status> Enter(Op op);

  const std::string name_;
  const Options options_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> data_;  // blob data by digest
  std::map<std::string, Repository> repos_;
  std::map<Op, std::vector<Status>> scripted_;
  std::map<Op, int> calls_;
  uint64_t next_upload_ = 1;
};

}  // namespace regcache::testing
