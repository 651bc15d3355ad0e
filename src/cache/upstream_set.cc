#include "cache/upstream_set.h"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>

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

std::string UpstreamRegistry(const std::string& name, const std::string& url_registry) {
  if (oci::LooksLikeRegistryHost(name) && oci::IsValidRegistryHost(name)) {
    return oci::NormalizeRegistryHost(name);
  }
  return url_registry;
}

Upstream::Upstream(UpstreamConfig config, std::unique_ptr<upstream::RegistryClient> client,
                   const UpstreamPolicy& policy, std::shared_ptr<std::atomic<bool>> cancel,
                   UpstreamStats* stats)
    : config_(std::move(config)),
      registry_(UpstreamRegistry(config_.name, client->registry())),
      ttls_(std::make_shared<const Ttls>(Ttls{config_.tag_ttl, config_.ttl_rules})),
      lists_(std::make_shared<const RepositoryLists>(RepositoryLists{config_.allow, config_.deny})),
      listed_(!config_.allow.empty() || !config_.deny.empty()),
      client_(std::move(client)),
      cancel_(std::move(cancel)),
      own_stats_(stats ? nullptr : std::make_unique<UpstreamStats>(1)),
      stats_(stats ? stats : own_stats_.get()),
      breaker_(config_.name, policy.breaker),
      requests_("up-" + config_.name, policy.request_threads, policy.request_queue),
      fills_("fill-" + config_.name, policy.fill_threads, policy.fill_queue) {}

void Upstream::Shutdown() {
  if (cancel_) cancel_->store(true);
  requests_.Shutdown();
  fills_.Shutdown();
}

std::chrono::seconds Upstream::TtlFor(const std::string& repo) const {
  auto ttls = ttls_.load();
  for (const auto& rule : ttls->rules) {
    if (fnmatch(rule.pattern.c_str(), repo.c_str(), 0) == 0) return rule.ttl;
  }
  return ttls->tag_ttl;
}

void Upstream::SetTtls(std::chrono::seconds tag_ttl, std::vector<TtlRule> rules) {
  ttls_.store(std::make_shared<const Ttls>(Ttls{tag_ttl, std::move(rules)}));
}

bool RepositoryAllowed(const std::vector<std::string>& allow, const std::vector<std::string>& deny,
                       const std::string& repository) {
  auto matches = [&repository](const std::string& pattern) {
    return fnmatch(pattern.c_str(), repository.c_str(), 0) == 0;
  };
  if (std::any_of(deny.begin(), deny.end(), matches)) return false;
  return allow.empty() || std::any_of(allow.begin(), allow.end(), matches);
}

void Upstream::SetRepositoryLists(std::vector<std::string> allow, std::vector<std::string> deny) {
  const bool listed = !allow.empty() || !deny.empty();
  lists_.store(
      std::make_shared<const RepositoryLists>(RepositoryLists{std::move(allow), std::move(deny)}));
  listed_.store(listed, std::memory_order_release);
}

bool IsValidUpstreamName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  if (oci::IsValidRegistryHost(name)) return true;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
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

namespace {

// Whether a running upstream can take `c` without a new client.
bool SameConnection(const UpstreamConfig& a, const UpstreamConfig& b) {
  auto creds = [](const UpstreamConfig& c) {
    return c.credentials ? c.credentials->username + '\n' + c.credentials->password : "";
  };
  return a.url == b.url && a.insecure == b.insecure && a.ca_file == b.ca_file &&
         creds(a) == creds(b) && a.credentials.has_value() == b.credentials.has_value();
}

}  // namespace

Result<std::unique_ptr<UpstreamSet>> UpstreamSet::Create(std::vector<UpstreamConfig> configs,
                                                         const std::string& default_name,
                                                         Metrics* metrics,
                                                         const std::string& docker_config_dir,
                                                         const UpstreamPolicy& policy) {
  auto set = std::make_unique<UpstreamSet>();
  set->metrics_ = metrics;
  set->policy_ = policy;
  set->credentials_ = std::make_shared<upstream::CredentialResolver>(docker_config_dir);
  std::vector<std::unique_ptr<Upstream>> created;
  Active active;
  RC_RETURN_IF_ERROR(set->Build(std::move(configs), default_name, &created, &active));
  for (auto& u : created) set->owned_.push_back(std::move(u));
  set->Publish(std::make_shared<const Active>(std::move(active)));
  return set;
}

Status UpstreamSet::Build(std::vector<UpstreamConfig> configs, const std::string& default_name,
                          std::vector<std::unique_ptr<Upstream>>* created, Active* out) {
  auto current = active_.load();
  for (auto& c : configs) {
    if (!IsValidUpstreamName(c.name)) {
      return InvalidArgument("upstream name '" + c.name +
                             "' is neither a registry host nor made of letters, digits, '.', '_' "
                             "and '-'");
    }
    for (auto* u : out->list) {
      if (u->name() == c.name)
        return InvalidArgument("upstream '" + c.name + "' is configured twice");
    }
    Upstream* keep = nullptr;
    if (current) {
      for (auto* u : current->list) {
        if (u->name() == c.name && SameConnection(u->config(), c)) keep = u;
      }
    }
    if (keep) {
      keep->SetTtls(c.tag_ttl, c.ttl_rules);
      keep->SetRepositoryLists(c.allow, c.deny);
      out->list.push_back(keep);
      continue;
    }
    auto cancel = std::make_shared<std::atomic<bool>>(false);
    RC_ASSIGN_OR_RETURN(auto client,
                        NewServeClient(c, credentials_, policy_, metrics_, cancel, false));
    // Counters are kept by name: an upstream replaced by a reload keeps its figures.
    UpstreamStats* stats = metrics_ ? metrics_->ForUpstream(c.name) : nullptr;
    created->push_back(
        std::make_unique<Upstream>(std::move(c), std::move(client), policy_, cancel, stats));
    out->list.push_back(created->back().get());
  }
  if (out->list.empty()) return InvalidArgument("no upstream configured");
  if (default_name.empty()) {
    out->default_upstream = out->list.front();
  } else {
    for (auto* u : out->list) {
      if (u->name() == default_name) out->default_upstream = u;
    }
  }
  if (!out->default_upstream) {
    return InvalidArgument("default upstream '" + default_name + "' is not configured");
  }
  return Status::Ok();
}

Status UpstreamSet::Reconfigure(std::vector<UpstreamConfig> configs,
                                const std::string& default_name, std::chrono::seconds drain) {
  std::lock_guard<std::mutex> lock(mu_);
  // A reload that runs after shutdown began would start a drain thread nobody joins.
  if (shut_down_) return Unavailable("shutting down: configuration not applied");
  std::vector<std::unique_ptr<Upstream>> created;
  Active next;
  Status s = Build(std::move(configs), default_name, &created, &next);
  if (!s.ok()) {
    for (auto& u : created) u->Shutdown();
    return s;
  }
  auto previous = active_.load();
  for (auto& u : created) owned_.push_back(std::move(u));
  Publish(std::make_shared<const Active>(next));
  // What is no longer found finishes what it was given, then stops (its object stays: work in
  // flight holds references to it).
  std::vector<Upstream*> retired;
  for (auto* u : previous->list) {
    if (std::find(next.list.begin(), next.list.end(), u) == next.list.end()) retired.push_back(u);
  }
  if (!retired.empty()) {
    drains_.emplace_back([retired, drain] {
      const auto until = std::chrono::steady_clock::now() + drain;
      for (auto* u : retired) {
        while (u->requests().load() + u->fills().load() > 0 &&
               std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        u->Shutdown();
      }
    });
  }
  return Status::Ok();
}

void UpstreamSet::Publish(std::shared_ptr<const Active> next) {
  static std::atomic<uint64_t> generations{0};
  active_.store(std::move(next));
  generation_.store(generations.fetch_add(1) + 1, std::memory_order_release);
}

const UpstreamSet::Active* UpstreamSet::active() const {
  thread_local const UpstreamSet* seen_set = nullptr;
  thread_local uint64_t seen_generation = 0;
  thread_local std::shared_ptr<const Active> seen;
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  if (seen_set != this || seen_generation != generation) {
    seen = active_.load();
    seen_set = this;
    seen_generation = generation;
  }
  return seen.get();
}

Upstream* UpstreamSet::Find(const std::string& name_or_host) {
  const Active* a = active();
  for (auto* u : a->list) {
    if (u->name() == name_or_host) return u;
  }
  // containerd sends ?ns=docker.io; users may write a host alias. The registry an upstream
  // stands for first (index.docker.io finds docker.io served from a mirror), then its URL's host.
  std::string normalized = oci::NormalizeRegistryHost(name_or_host);
  for (auto* u : a->list) {
    if (u->registry() == normalized) return u;
  }
  for (auto* u : a->list) {
    if (u->client().registry() == normalized) return u;
  }
  return nullptr;
}

Upstream* UpstreamSet::Default() { return active()->default_upstream; }

void UpstreamSet::Shutdown() {
  if (on_shutdown_) on_shutdown_();
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  for (auto& t : drains_) t.join();
  drains_.clear();
  for (auto& u : owned_) u->Shutdown();
}

std::vector<Upstream*> UpstreamSet::All() { return active()->list; }

}  // namespace regcache::cache
