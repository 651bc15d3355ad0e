// The copy engine behind `regcache ensure` and `regcache sync`: makes a destination tag hold an
// image from a source registry, byte-exact, moving only what is missing.
//
// Order of writes: blobs, then child manifests by digest, then the top manifest under the tag, so
// a failed or interrupted copy never leaves the tag pointing at something incomplete. Blobs are
// streamed source -> destination through a bounded pipe and verified on the way; nothing is
// buffered whole in memory or on disk.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "oci/manifest.h"
#include "oci/reference.h"
#include "upstream/registry_client.h"

namespace regcache::copy {

struct CopyProgress {
  uint64_t blobs_total = 0;
  uint64_t blobs_done = 0;
  uint64_t bytes_total = 0;  // bytes of blobs that must move (not skipped/mounted)
  uint64_t bytes_done = 0;
};

struct EnsureOptions {
  // HEAD the source even when the destination has the tag; copy if the digests differ.
  bool check_upstream = false;
  // Copy only these platforms of an index. One platform: its image manifest is copied as is
  // (the destination digest is that platform's digest). Several: a new index is written (a
  // new digest). Empty: everything, byte-exact.
  std::vector<oci::Platform> platforms;
  int parallel_blobs = 4;
  // Bytes buffered per blob in flight.
  size_t pipe_bytes = 512 * 1024;
  // Plan only: report what would be copied, write nothing.
  bool dry_run = false;
  // Called from worker threads as blobs progress.
  std::function<void(const CopyProgress&)> on_progress;
};

struct EnsureResult {
  oci::Reference source;
  oci::Reference destination;
  oci::Digest source_digest;       // of the source's top manifest (empty if never asked)
  oci::Digest destination_digest;  // what the destination tag points to now
  bool copied = false;             // false: already present (or dry run)
  bool would_copy = false;         // dry run: a copy is needed
  std::string reason;              // "present", "missing", "tag moved", "present (source same)"
  int manifests_pushed = 0;
  int manifests_present = 0;
  int blobs_skipped = 0;
  int blobs_mounted = 0;
  int blobs_copied = 0;
  uint64_t bytes_copied = 0;
  upstream::RateLimitInfo source_rate_limit;
  upstream::RequestStats source_requests;  // for this run's source client, cumulative
};

class Copier {
 public:
  Copier(upstream::RegistryClient& source, upstream::RegistryClient& destination,
         EnsureOptions options);

  // Makes `dst` hold `src`. When `dst` has neither tag nor digest given... callers pass the
  // resolved tag. On success the result says what happened. On failure nothing refers to
  // content that did not verify, and the destination tag is unchanged.
  Result<EnsureResult> Ensure(const oci::Reference& src, const oci::Reference& dst);

 private:
  struct Plan;
  Status PlanManifest(const oci::Reference& src, const oci::Reference& dst,
                      const oci::Descriptor& desc, Plan& plan, int depth);
  Status CopyBlobs(const oci::Reference& src, const oci::Reference& dst,
                   const std::vector<oci::Descriptor>& blobs, EnsureResult& result);
  Status CopyOneBlob(const oci::Reference& src, const oci::Reference& dst,
                     const oci::Descriptor& blob, EnsureResult& result);
  void ReportProgress(uint64_t blobs_delta, uint64_t bytes_delta);

  upstream::RegistryClient& src_;
  upstream::RegistryClient& dst_;
  EnsureOptions options_;
  std::mutex progress_mu_;
  std::mutex result_mu_;  // guards EnsureResult counters updated by blob workers
  CopyProgress progress_;
};

}  // namespace regcache::copy
