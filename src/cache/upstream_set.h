// The configured upstream registries of `regcache serve`, each with its client and tag TTLs.
// Only these are ever contacted: the server is not an open proxy.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "cache/metrics.h"
#include "upstream/registry_client.h"

namespace regcache::cache {

struct TtlRule {
  std::string pattern;  // fnmatch glob over the repository, e.g. "library/*"
  std::chrono::seconds ttl;
};

struct UpstreamConfig {
  std::string name;  // routing name: path prefix and ?ns= value, e.g. "docker.io"
  std::string url;   // e.g. "https://registry-1.docker.io" or "http://127.0.0.1:5000"
  std::optional<upstream::Credentials> credentials;
  bool insecure = false;
  std::string ca_file;
  std::chrono::seconds tag_ttl{300};
  std::vector<TtlRule> ttl_rules;
};

// The default set: docker.io (default), ghcr.io, quay.io, registry.k8s.io, gcr.io, public.ecr.aws.
std::vector<UpstreamConfig> EmbeddedUpstreams();

class Upstream {
 public:
  Upstream(UpstreamConfig config, std::unique_ptr<upstream::RegistryClient> client)
      : config_(std::move(config)), client_(std::move(client)) {}
  const std::string& name() const { return config_.name; }
  const UpstreamConfig& config() const { return config_; }
  upstream::RegistryClient& client() { return *client_; }
  // Docker Hub's rule: single-component names live under library/.
  bool IsDockerHub() const { return client_->registry() == "docker.io"; }
  std::chrono::seconds TtlFor(const std::string& repo) const;

 private:
  UpstreamConfig config_;
  std::unique_ptr<upstream::RegistryClient> client_;
};

class UpstreamSet {
 public:
  // Builds clients for each config. kInvalidArgument for a bad URL, duplicate or unknown default.
  static Result<std::unique_ptr<UpstreamSet>> Create(std::vector<UpstreamConfig> configs,
                                                     const std::string& default_name,
                                                     Metrics* metrics,
                                                     const std::string& docker_config_dir = "");

  // By routing name ("docker.io") or by registry host alias ("registry-1.docker.io",
  // "index.docker.io"); nullptr when not configured.
  Upstream* Find(const std::string& name_or_host);
  Upstream* Default() { return default_; }
  std::vector<Upstream*> All();

 private:
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  Upstream* default_ = nullptr;
};

}  // namespace regcache::cache
