// Content digests ("sha256:<64 hex>", "sha512:<128 hex>") and streaming hashers.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace regcache::oci {

enum class DigestAlgorithm { kSha256, kSha512 };

class Digest {
 public:
  Digest() = default;

  // Parses "algo:hex". Only sha256 and sha512 with lowercase hex of the exact length are valid;
  // on failure the error names the bad part.
  static Result<Digest> Parse(std::string_view text);

  // Digest of a whole in-memory buffer (manifests; never used for blobs).
  static Digest Of(std::string_view bytes, DigestAlgorithm algo = DigestAlgorithm::kSha256);

  DigestAlgorithm algorithm() const { return algo_; }
  std::string_view hex() const { return std::string_view(text_).substr(text_.find(':') + 1); }
  // "algo:hex"; kept whole because every response header and index key wants it so.
  const std::string& str() const { return text_; }
  bool empty() const { return text_.empty(); }

  bool operator==(const Digest& other) const = default;
  bool operator<(const Digest& other) const { return str() < other.str(); }

 private:
  Digest(DigestAlgorithm algo, std::string text) : algo_(algo), text_(std::move(text)) {}
  DigestAlgorithm algo_ = DigestAlgorithm::kSha256;
  std::string text_;
};

// Incremental hasher: feed bytes as they stream past, then compare with Matches().
class DigestHasher {
 public:
  explicit DigestHasher(DigestAlgorithm algo);
  ~DigestHasher();
  DigestHasher(const DigestHasher&) = delete;
  DigestHasher& operator=(const DigestHasher&) = delete;

  void Update(const void* data, size_t size);
  // Final digest; the hasher must not be updated afterwards.
  Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DigestAlgorithm algo_;
};

}  // namespace regcache::oci
