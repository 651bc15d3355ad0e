// Fuzzes image references and the validators behind them: ParseReference (with and without the
// default tag), Digest::Parse, IsValidTag, IsValidRepository, IsValidRegistryHost and
// NormalizeRegistryHost, all on the input as text. Besides "no crash", checks that what
// ParseReference accepts is valid by the validators and survives a String() round trip, and that
// whatever a validator accepts ParseReference accepts in its place.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/strings.h"
#include "check.h"
#include "oci/digest.h"
#include "oci/reference.h"

namespace oci = regcache::oci;

namespace {

void CheckReference(std::string_view text, bool default_tag) {
  auto ref = oci::ParseReference(text, default_tag);
  if (!ref.ok()) return;
  FUZZ_CHECK(!ref->registry.empty());
  FUZZ_CHECK(oci::IsValidRegistryHost(ref->registry));
  FUZZ_CHECK(oci::IsValidRepository(ref->repository));
  FUZZ_CHECK(ref->Name().size() <= oci::kMaxNameLength);
  FUZZ_CHECK(ref->tag.empty() || oci::IsValidTag(ref->tag));
  FUZZ_CHECK(!ref->tag.empty() || ref->digest || !default_tag);
  if (ref->registry == oci::kDockerHub) {
    FUZZ_CHECK(ref->repository.find('/') != std::string::npos);
  }
  FUZZ_CHECK(!ref->Identifier().empty() || (!default_tag && ref->tag.empty() && !ref->digest));

  // The fully qualified form names the same thing.
  auto again = oci::ParseReference(ref->String(), default_tag);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->registry == ref->registry);
  FUZZ_CHECK(again->repository == ref->repository);
  FUZZ_CHECK(again->tag == ref->tag);
  FUZZ_CHECK(again->digest == ref->digest);
  FUZZ_CHECK(again->String() == ref->String());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  CheckReference(text, true);
  CheckReference(text, false);

  if (auto d = oci::Digest::Parse(text); d.ok()) {
    FUZZ_CHECK(!d->empty());
    FUZZ_CHECK(d->str() == text);
    FUZZ_CHECK(oci::Digest::Parse(d->str()).ok());
    auto ref = oci::ParseReference("example.com/app@" + std::string(text));
    FUZZ_CHECK(ref.ok() && ref->digest == *d && ref->tag.empty());
  }

  if (oci::IsValidTag(text)) {
    FUZZ_CHECK(!text.empty() && text.size() <= 128);
    auto ref = oci::ParseReference("example.com/app:" + std::string(text));
    FUZZ_CHECK(ref.ok() && ref->tag == text);
  }

  if (oci::IsValidRepository(text)) {
    FUZZ_CHECK(!text.empty() && text.size() <= oci::kMaxNameLength);
    if (text.size() <= oci::kMaxNameLength - 12) {
      auto ref = oci::ParseReference("example.com/" + std::string(text));
      FUZZ_CHECK(ref.ok() && ref->repository == text && ref->registry == "example.com");
    }
  }

  // A valid host that docker's rule takes for one (a '.' or ':', "localhost", or uppercase) is the
  // registry of a reference it starts.
  bool looks_like_host = text.find_first_of(".:") != std::string_view::npos ||
                         text == "localhost" || regcache::ToLower(text) != text;
  if (oci::IsValidRegistryHost(text) && looks_like_host && text.size() <= 200) {
    auto ref = oci::ParseReference(std::string(text) + "/team/app:1.0");
    FUZZ_CHECK(ref.ok());
    // Only Docker Hub's aliases are renamed.
    if (ref->registry != text) FUZZ_CHECK(ref->registry == oci::kDockerHub);
  }

  std::string host = oci::NormalizeRegistryHost(text);
  FUZZ_CHECK(host.find('/') == std::string::npos);
  FUZZ_CHECK(oci::NormalizeRegistryHost(host) == host);
  (void)oci::RegistryApiHost(host);
  return 0;
}
