#include "cache/upstream_set.h"

#include <fnmatch.h>

#include "base/strings.h"
#include "oci/reference.h"

namespace regcache::cache {

std::vector<UpstreamConfig> EmbeddedUpstreams() {
  std::vector<UpstreamConfig> out;
  for (const auto& [name, url] : std::vector<std::pair<std::string, std::string>>{
           {"docker.io", "https://registry-1.docker.io"},
           {"ghcr.io", "https://ghcr.io"},
           {"quay.io", "https://quay.io"},
           {"registry.k8s.io", "https://registry.k8s.io"},
           {"gcr.io", "https://gcr.io"},
           {"public.ecr.aws", "https://public.ecr.aws"}}) {
    UpstreamConfig c;
    c.name = name;
    c.url = url;
    out.push_back(c);
  }
  return out;
}

Upstream::Upstream(UpstreamConfig config, std::unique_ptr<upstream::RegistryClient> client,
                   const UpstreamPolicy& policy, std::shared_ptr<std::atomic<bool>> cancel)
    : config_(std::move(config)),
      client_(std::move(client)),
      cancel_(std::move(cancel)),
      breaker_(config_.name, policy.breaker),
      requests_("up-" + config_.name, policy.request_threads, policy.request_queue),
      fills_("fill-" + config_.name, policy.fill_threads, policy.fill_queue) {}

void Upstream::Shutdown() {
  if (cancel_) cancel_->store(true);
  requests_.Shutdown();
  fills_.Shutdown();
}

std::chrono::seconds Upstream::TtlFor(const std::string& repo) const {
  for (const auto& rule : config_.ttl_rules) {
    if (fnmatch(rule.pattern.c_str(), repo.c_str(), 0) == 0) return rule.ttl;
  }
  return config_.tag_ttl;
}

Result<std::unique_ptr<upstream::RegistryClient>> NewServeClient(
    const UpstreamConfig& c, const std::shared_ptr<upstream::CredentialResolver>& credentials,
    const UpstreamPolicy& policy, Metrics* metrics, std::shared_ptr<std::atomic<bool>> cancel,
    bool patient) {
  if (c.name.empty()) return InvalidArgument("an upstream needs a name");
  const std::string& url = c.url;
  bool http = StartsWith(url, "http://");
  if (!http && !StartsWith(url, "https://")) {
    return InvalidArgument("upstream '" + c.name + "': url must start with https:// or http://");
  }
  std::string host = url.substr(http ? 7 : 8);
  if (host.find('/') != std::string::npos) host = host.substr(0, host.find('/'));
  if (!oci::IsValidRegistryHost(host)) {
    return InvalidArgument("upstream '" + c.name + "': invalid host in url " + url);
  }
  std::string registry = oci::NormalizeRegistryHost(host);
  upstream::ClientOptions options;
  options.credentials = credentials;
  if (c.credentials) credentials->SetExplicit(registry, *c.credentials);
  if (http || c.insecure) options.insecure_registries.push_back(registry);
  options.plain_http = http;
  options.transport.ca_file = c.ca_file;
  options.transport.cancel = std::move(cancel);
  options.transport.connect_timeout_ms = static_cast<long>(policy.timeout.count());
  options.transport.stall_timeout_s = static_cast<long>(policy.stall.count());
  if (!patient) {
    // A server answers from cache rather than wait: short deadlines, one quick retry at most,
    // and a 429 is reported (and remembered by the breaker), never slept on.
    options.transport.response_timeout_ms = static_cast<long>(policy.timeout.count());
    options.retry.max_attempts = 2;
    options.retry.base_delay = std::chrono::milliseconds(100);
    options.retry.max_delay = std::chrono::milliseconds(1000);
    options.retry.retry_rate_limited = false;
    options.retry.max_elapsed = policy.timeout;
  }
  // Patient clients keep the copy engine's defaults: an upload's answer comes only after its
  // body, however long that takes; a stall still fails it.
  const std::string name = c.name;
  if (metrics) {
    options.on_response = [metrics, name](const std::string& method, long status) {
      metrics->UpstreamRequest(name, method, status);
    };
  }
  return upstream::NewRegistryClient(registry, std::move(options));
}

Result<std::unique_ptr<UpstreamSet>> UpstreamSet::Create(std::vector<UpstreamConfig> configs,
                                                         const std::string& default_name,
                                                         Metrics* metrics,
                                                         const std::string& docker_config_dir,
                                                         const UpstreamPolicy& policy) {
  auto set = std::make_unique<UpstreamSet>();
  auto credentials = std::make_shared<upstream::CredentialResolver>(docker_config_dir);
  for (auto& c : configs) {
    if (set->Find(c.name)) return InvalidArgument("upstream '" + c.name + "' is configured twice");
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    RC_ASSIGN_OR_RETURN(auto client,
                        NewServeClient(c, credentials, policy, metrics, cancel, false));
    set->upstreams_.push_back(
        std::make_unique<Upstream>(std::move(c), std::move(client), policy, cancel));
  }
  if (set->upstreams_.empty()) return InvalidArgument("no upstream configured");
  set->default_ = default_name.empty() ? set->upstreams_.front().get() : set->Find(default_name);
  if (!set->default_)
    return InvalidArgument("default upstream '" + default_name + "' is not configured");
  return set;
}

Upstream* UpstreamSet::Find(const std::string& name_or_host) {
  for (auto& u : upstreams_) {
    if (u->name() == name_or_host) return u.get();
  }
  // containerd sends ?ns=docker.io; users may write a host alias.
  std::string normalized = oci::NormalizeRegistryHost(name_or_host);
  for (auto& u : upstreams_) {
    if (u->client().registry() == normalized) return u.get();
  }
  return nullptr;
}

void UpstreamSet::Shutdown() {
  if (on_shutdown_) on_shutdown_();
  for (auto& u : upstreams_) u->Shutdown();
}

std::vector<Upstream*> UpstreamSet::All() {
  std::vector<Upstream*> out;
  for (auto& u : upstreams_) out.push_back(u.get());
  return out;
}

}  // namespace regcache::cache
