// The configured upstream registries of `regcache serve`, each with its client and tag TTLs.
// Only these are ever contacted: the server is not an open proxy.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/work_queue.h"
#include "cache/breaker.h"
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
  // Which repositories may be pulled through: fnmatch globs over the upstream-side repository
  // ("library/alpine" for Docker Hub's "alpine"; '*' also matches '/'). An empty allow-list
  // allows every repository; a repository matching a deny pattern is refused either way.
  std::vector<std::string> allow;
  std::vector<std::string> deny;
};

// Whether `name` may name an upstream: a registry host ("docker.io", "registry.example.com:5000")
// or an identifier of letters, digits, '.', '_' and '-' ("internal"), at most 255 characters.
// Names appear in request paths, log lines and /metrics labels, where a quote or a newline would
// break every scrape.
bool IsValidUpstreamName(std::string_view name);

// Whether allow and deny lists (as in UpstreamConfig) let `repository` through.
bool RepositoryAllowed(const std::vector<std::string>& allow, const std::vector<std::string>& deny,
                       const std::string& repository);

// The default set: docker.io (default), ghcr.io, quay.io, registry.k8s.io, gcr.io, public.ecr.aws.
std::vector<UpstreamConfig> EmbeddedUpstreams();

// How `regcache serve` talks to every upstream: its own capacity, deadlines and breaker.
struct UpstreamPolicy {
  // Threads for requests (HEADs, manifests, tag lists) and how many more may wait for them.
  size_t request_threads = 8;
  size_t request_queue = 64;
  // Threads for blob downloads and how many more may wait.
  size_t fill_threads = 8;
  size_t fill_queue = 256;
  // Deadline for an upstream to begin answering one request, and the retry budget of one call.
  std::chrono::milliseconds timeout{3000};
  // Longest a blob download may stall mid-body.
  std::chrono::seconds stall{20};
  BreakerOptions breaker;
};

class Upstream {
 public:
  // `stats`: where its clients' requests are counted (Metrics::ForUpstream); null: its own.
  Upstream(UpstreamConfig config, std::unique_ptr<upstream::RegistryClient> client,
           const UpstreamPolicy& policy, std::shared_ptr<std::atomic<bool>> cancel,
           UpstreamStats* stats = nullptr);
  const std::string& name() const { return config_.name; }
  // As configured at creation; TTLs and repository lists may have been changed since.
  const UpstreamConfig& config() const { return config_; }
  upstream::RegistryClient& client() { return *client_; }
  // The registry this upstream stands for, as clients and image references name it: its
  // configured name when that is a registry host ("docker.io", "ghcr.io",
  // "registry.example.com:5000"), else its URL's host. An upstream docker.io served from
  // https://mirror.gcr.io stands for docker.io. The backing registry's layout and Docker Hub's
  // library/ rule follow it, so that `regcache ensure --mirror` finds what serve wrote.
  const std::string& registry() const { return registry_; }
  // Docker Hub's rule: single-component names live under library/.
  bool IsDockerHub() const { return registry_ == "docker.io"; }
  std::chrono::seconds TtlFor(const std::string& repo) const;
  // Live reload: new TTLs apply to the next lookup.
  void SetTtls(std::chrono::seconds tag_ttl, std::vector<TtlRule> rules);
  // RepositoryAllowed with this upstream's current lists (nothing to check, no allocation,
  // without lists).
  bool Allows(const std::string& repo) const {
    if (!listed_.load(std::memory_order_acquire)) return true;
    auto lists = lists_.load();
    return RepositoryAllowed(lists->allow, lists->deny, repo);
  }
  // Live reload: new allow/deny lists apply to the next request.
  void SetRepositoryLists(std::vector<std::string> allow, std::vector<std::string> deny);

  // Capacity reserved for this upstream: work for one upstream never waits behind another's,
  // and never behind hits. Both refuse work when full (the caller answers 503 at once).
  WorkQueue& requests() { return requests_; }
  WorkQueue& fills() { return fills_; }
  CircuitBreaker& breaker() { return breaker_; }
  // Requests and bytes of this upstream's clients (never null).
  UpstreamStats* stats() { return stats_; }

  // Runs `call` (returning Status or Result<T>) if the breaker admits it, and records how it
  // went; otherwise returns the breaker's refusal without contacting the upstream.
  template <typename F>
  auto Guarded(F&& call) -> decltype(call()) {
    return breaker_.Guard(std::forward<F>(call));
  }

  // Aborts transfers in progress (within about a second) and joins this upstream's threads,
  // after running what was queued (which then fails fast with kAborted).
  void Shutdown();

 private:
  struct Ttls {
    std::chrono::seconds tag_ttl;
    std::vector<TtlRule> rules;
  };
  struct RepositoryLists {
    std::vector<std::string> allow, deny;
  };
  UpstreamConfig config_;
  std::string registry_;
  std::atomic<std::shared_ptr<const Ttls>> ttls_;
  std::atomic<std::shared_ptr<const RepositoryLists>> lists_;
  std::atomic<bool> listed_{false};  // lists_ has a pattern: hits without lists skip the load
  std::unique_ptr<upstream::RegistryClient> client_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::unique_ptr<UpstreamStats> own_stats_;
  UpstreamStats* stats_;
  CircuitBreaker breaker_;
  WorkQueue requests_;
  WorkQueue fills_;
};

// What Upstream::registry() says for an upstream named `name` whose client talks to the
// normalized registry `url_registry`.
std::string UpstreamRegistry(const std::string& name, const std::string& url_registry);

// The client `regcache serve` uses for `config`'s registry: with `policy`'s short deadlines for
// requests a client waits on, or `patient` for background copies (no deadline on an answer, the
// copy engine's retries). kInvalidArgument for a bad URL or name.
Result<std::unique_ptr<upstream::RegistryClient>> NewServeClient(
    const UpstreamConfig& config, const std::shared_ptr<upstream::CredentialResolver>& credentials,
    const UpstreamPolicy& policy, Metrics* metrics, std::shared_ptr<std::atomic<bool>> cancel,
    bool patient);

class UpstreamSet {
 public:
  // Builds clients for each config. kInvalidArgument for a bad URL, duplicate or unknown default.
  static Result<std::unique_ptr<UpstreamSet>> Create(std::vector<UpstreamConfig> configs,
                                                     const std::string& default_name,
                                                     Metrics* metrics,
                                                     const std::string& docker_config_dir = "",
                                                     const UpstreamPolicy& policy = {});

  // Live reload: makes `configs` the configured set. An upstream whose connection settings (URL,
  // credentials, TLS) are unchanged keeps its client, breaker and queues and takes the new TTLs;
  // a new or changed one gets fresh ones; one that is gone or replaced stops being found at once,
  // finishes the work it has (up to `drain`), then shuts down. On error (a bad URL, a duplicate,
  // an unknown default) nothing changes; after Shutdown, kUnavailable and nothing changes.
  Status Reconfigure(std::vector<UpstreamConfig> configs, const std::string& default_name,
                     std::chrono::seconds drain);

  // By routing name ("docker.io") or by registry host alias ("registry-1.docker.io",
  // "index.docker.io"); nullptr when not configured. Safe during Reconfigure: a pointer stays
  // valid until the set is destroyed.
  Upstream* Find(const std::string& name_or_host);
  Upstream* Default();
  std::vector<Upstream*> All();

  // Shuts every upstream down (see Upstream::Shutdown). Idempotent. `hook` runs first (e.g. to
  // cancel transfers from the backing registry that fills are running on upstream threads).
  void Shutdown();
  void OnShutdown(std::function<void()> hook) { on_shutdown_ = std::move(hook); }

 private:
  struct Active {
    std::vector<Upstream*> list;
    Upstream* default_upstream = nullptr;
  };
  // The active set as this thread last saw it, reloaded when the generation moved: the request
  // path pays one atomic load, not an atomic shared_ptr load and two reference-count updates
  // per lookup. Valid until this thread's next call.
  const Active* active() const;
  void Publish(std::shared_ptr<const Active> next);
  Status Build(std::vector<UpstreamConfig> configs, const std::string& default_name,
               std::vector<std::unique_ptr<Upstream>>* created, Active* out);

  Metrics* metrics_ = nullptr;
  UpstreamPolicy policy_;
  std::shared_ptr<upstream::CredentialResolver> credentials_;
  std::mutex mu_;                                 // serializes Reconfigure and Shutdown
  std::vector<std::unique_ptr<Upstream>> owned_;  // every upstream ever made, active or retired
  std::atomic<std::shared_ptr<const Active>> active_;
  // Changes with every Publish; unique across sets, so a thread's cached snapshot of another
  // (perhaps destroyed) set at the same address never matches.
  std::atomic<uint64_t> generation_{0};
  std::vector<std::thread> drains_;  // retired upstreams finishing their work
  bool shut_down_ = false;           // under mu_: Reconfigure refuses after Shutdown
  std::function<void()> on_shutdown_;
};

}  // namespace regcache::cache
