#include "oci/digest.h"

#include <openssl/evp.h>

namespace regcache::oci {
namespace {

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string ToHex(const unsigned char* data, size_t size) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 15]);
  }
  return out;
}

}  // namespace

Result<Digest> Digest::Parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("digest '" + std::string(text) + "' is not of the form algorithm:hex");
  }
  std::string_view algo = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  DigestAlgorithm a;
  size_t want;
  if (algo == "sha256") {
    a = DigestAlgorithm::kSha256;
    want = 64;
  } else if (algo == "sha512") {
    a = DigestAlgorithm::kSha512;
    want = 128;
  } else {
    return InvalidArgument("digest algorithm '" + std::string(algo) +
                           "' is not supported (sha256, sha512)");
  }
  if (hex.size() != want || !IsLowerHex(hex)) {
    return InvalidArgument("digest '" + std::string(text) + "' needs " + std::to_string(want) +
                           " lowercase hex characters after '" + std::string(algo) + ":'");
  }
  return Digest(a, std::string(text));
}

Digest Digest::Of(std::string_view bytes, DigestAlgorithm algo) {
  DigestHasher h(algo);
  h.Update(bytes.data(), bytes.size());
  return h.Finish();
}

struct DigestHasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

DigestHasher::DigestHasher(DigestAlgorithm algo) : impl_(std::make_unique<Impl>()), algo_(algo) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, algo == DigestAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512(),
                    nullptr);
}

DigestHasher::~DigestHasher() { EVP_MD_CTX_free(impl_->ctx); }

void DigestHasher::Update(const void* data, size_t size) {
  EVP_DigestUpdate(impl_->ctx, data, size);
}

Digest DigestHasher::Finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &len);
  return Digest::Parse((algo_ == DigestAlgorithm::kSha256 ? "sha256:" : "sha512:") + ToHex(md, len))
      .value();
}

}  // namespace regcache::oci
