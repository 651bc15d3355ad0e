#include "oci/manifest.h"

#include <nlohmann/json.hpp>

#include "base/strings.h"

namespace regcache::oci {
namespace {

using nlohmann::json;

Result<std::string> GetString(const json& obj, const char* key, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) return InvalidArgument(std::string("missing field '") + key + "'");
    return std::string();
  }
  if (!it->is_string()) return InvalidArgument(std::string("field '") + key + "' is not a string");
  return it->get<std::string>();
}

Result<Descriptor> ParseDescriptor(const json& obj, const std::string& where) {
  if (!obj.is_object()) return InvalidArgument(where + " is not an object");
  Descriptor d;
  auto media_type = GetString(obj, "mediaType", true);
  if (!media_type.ok()) return media_type.status().WithContext(where);
  d.media_type = *media_type;
  auto digest_text = GetString(obj, "digest", true);
  if (!digest_text.ok()) return digest_text.status().WithContext(where);
  auto digest = Digest::Parse(*digest_text);
  if (!digest.ok()) return digest.status().WithContext(where);
  d.digest = *digest;
  auto size = obj.find("size");
  if (size == obj.end() || !size->is_number_integer() ||
      (size->is_number_integer() && !size->is_number_unsigned() && size->get<int64_t>() < 0)) {
    return InvalidArgument(where + ": 'size' must be a non-negative integer");
  }
  d.size = size->get<uint64_t>();
  auto at = GetString(obj, "artifactType", false);
  if (!at.ok()) return at.status().WithContext(where);
  d.artifact_type = *at;
  if (auto urls = obj.find("urls"); urls != obj.end()) {
    if (!urls->is_array()) return InvalidArgument(where + ": 'urls' is not an array");
    for (const auto& u : *urls) {
      if (!u.is_string()) return InvalidArgument(where + ": 'urls' holds a non-string");
      d.urls.push_back(u.get<std::string>());
    }
  }
  if (auto p = obj.find("platform"); p != obj.end()) {
    if (!p->is_object()) return InvalidArgument(where + ": 'platform' is not an object");
    Platform platform;
    auto os = GetString(*p, "os", true);
    auto arch = GetString(*p, "architecture", true);
    auto variant = GetString(*p, "variant", false);
    auto osv = GetString(*p, "os.version", false);
    if (!os.ok() || !arch.ok() || !variant.ok() || !osv.ok()) {
      return InvalidArgument(where + ": 'platform' needs string 'os' and 'architecture'");
    }
    platform.os = *os;
    platform.architecture = *arch;
    platform.variant = *variant;
    platform.os_version = *osv;
    d.platform = platform;
  }
  return d;
}

}  // namespace

std::string_view BaseMediaType(std::string_view content_type) {
  size_t semi = content_type.find(';');
  if (semi != std::string_view::npos) content_type = content_type.substr(0, semi);
  return Trim(content_type);
}

std::string ManifestAcceptHeader() {
  return std::string(kOciIndex) + ", " + std::string(kOciManifest) + ", " +
         std::string(kDockerManifestList) + ", " + std::string(kDockerManifestV2);
}

bool IsIndexMediaType(std::string_view mt) { return mt == kOciIndex || mt == kDockerManifestList; }
bool IsImageManifestMediaType(std::string_view mt) {
  return mt == kOciManifest || mt == kDockerManifestV2;
}
bool IsManifestMediaType(std::string_view mt) {
  return IsIndexMediaType(mt) || IsImageManifestMediaType(mt);
}

std::string Platform::String() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

bool Platform::Matches(const Platform& want) const {
  if (os != want.os || architecture != want.architecture) return false;
  if (want.variant.empty()) return true;
  // arm64 manifests often omit the implied "v8".
  if (variant.empty() && architecture == "arm64" && want.variant == "v8") return true;
  return variant == want.variant;
}

Result<Platform> ParsePlatform(std::string_view text) {
  auto parts = Split(text, '/');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty() ||
      (parts.size() == 3 && parts[2].empty())) {
    return InvalidArgument("platform '" + std::string(text) +
                           "' is not of the form os/arch[/variant]");
  }
  Platform p;
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

bool Descriptor::IsNonDistributable() const {
  return media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
         StartsWith(media_type, "application/vnd.oci.image.layer.nondistributable.");
}

std::vector<Descriptor> Manifest::Blobs() const {
  std::vector<Descriptor> out;
  if (config) out.push_back(*config);
  for (const auto& l : layers) {
    if (!l.IsNonDistributable()) out.push_back(l);
  }
  return out;
}

Result<Manifest> ParseManifest(std::string_view bytes, std::string_view content_type) {
  if (bytes.size() > kMaxManifestBytes) {
    return InvalidArgument("manifest is larger than 4 MiB");
  }
  json doc = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("manifest is not valid JSON");
  if (!doc.is_object()) return InvalidArgument("manifest is not a JSON object");

  std::string_view ct = BaseMediaType(content_type);
  auto sv = doc.find("schemaVersion");
  if (ct == kDockerManifestV1 || ct == kDockerManifestV1Signed ||
      (sv != doc.end() && sv->is_number_integer() && sv->get<int64_t>() == 1)) {
    return Unsupported(
        "docker schema1 manifests are not supported (deprecated; registries and containerd 2 "
        "refuse them); re-push the image with a current client");
  }
  if (sv == doc.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2) {
    return InvalidArgument("manifest 'schemaVersion' must be 2");
  }

  Manifest m;
  auto field = GetString(doc, "mediaType", false);
  if (!field.ok()) return field.status().WithContext("manifest");
  if (!field->empty()) {
    if (IsManifestMediaType(ct) && *field != ct) {
      return InvalidArgument("manifest mediaType '" + *field + "' disagrees with Content-Type '" +
                             std::string(ct) + "'");
    }
    m.media_type = *field;
  } else if (IsManifestMediaType(ct)) {
    m.media_type = std::string(ct);
  } else if (doc.contains("manifests")) {
    m.media_type = std::string(kOciIndex);
  } else {
    m.media_type = std::string(kOciManifest);
  }
  if (!IsManifestMediaType(m.media_type)) {
    return InvalidArgument("unknown manifest media type '" + m.media_type + "'");
  }
  m.is_index = IsIndexMediaType(m.media_type);

  auto at = GetString(doc, "artifactType", false);
  if (!at.ok()) return at.status().WithContext("manifest");
  m.artifact_type = *at;
  if (auto s = doc.find("subject"); s != doc.end()) {
    RC_ASSIGN_OR_RETURN(m.subject, ParseDescriptor(*s, "subject"));
  }

  if (m.is_index) {
    auto list = doc.find("manifests");
    if (list == doc.end() || !list->is_array()) {
      return InvalidArgument("index has no 'manifests' array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RC_ASSIGN_OR_RETURN(Descriptor d,
                          ParseDescriptor((*list)[i], "manifests[" + std::to_string(i) + "]"));
      m.manifests.push_back(std::move(d));
    }
  } else {
    auto config = doc.find("config");
    if (config == doc.end()) return InvalidArgument("image manifest has no 'config'");
    RC_ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, "config"));
    auto layers = doc.find("layers");
    if (layers == doc.end() || !layers->is_array()) {
      return InvalidArgument("image manifest has no 'layers' array");
    }
    for (size_t i = 0; i < layers->size(); ++i) {
      RC_ASSIGN_OR_RETURN(Descriptor d,
                          ParseDescriptor((*layers)[i], "layers[" + std::to_string(i) + "]"));
      m.layers.push_back(std::move(d));
    }
  }
  return m;
}

Result<std::string> FilterIndex(std::string_view index_bytes, std::string_view list_media_type,
                                const std::vector<Digest>& keep) {
  using ordered = nlohmann::ordered_json;
  ordered doc = ordered::parse(index_bytes.begin(), index_bytes.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("manifests") ||
      !doc["manifests"].is_array()) {
    return InvalidArgument("index is not valid");
  }
  ordered out = ordered::object();
  out["schemaVersion"] = 2;
  out["mediaType"] = std::string(list_media_type);
  out["manifests"] = ordered::array();
  for (const auto& d : doc["manifests"]) {
    if (!d.is_object() || !d.contains("digest") || !d["digest"].is_string()) continue;
    for (const auto& k : keep) {
      if (d["digest"].get<std::string>() == k.str()) {
        out["manifests"].push_back(d);
        break;
      }
    }
  }
  if (doc.contains("annotations")) out["annotations"] = doc["annotations"];
  return out.dump();
}

}  // namespace regcache::oci
