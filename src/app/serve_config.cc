#include "app/serve_config.h"

#include <yaml-cpp/yaml.h>

#include "base/cpus.h"
#include "base/strings.h"
#include "copy/yaml_config.h"
#include "oci/reference.h"

namespace regcache::app {
namespace {

// Why a name is refused (cache::IsValidUpstreamName).
constexpr const char* kUpstreamNameRule =
    " is not a valid upstream name: a registry host (docker.io, registry.example.com:5000) or "
    "letters, digits, '.', '_' and '-'";

// A positive count from `key`, if present.
Status LoadCount(const YAML::Node& root, const char* key, size_t* out) {
  if (!root[key]) return Status::Ok();
  auto v = root[key].as<int64_t>();
  if (v < 1 || v > 1000000) return InvalidArgument(std::string(key) + " must be at least 1");
  *out = static_cast<size_t>(v);
  return Status::Ok();
}

template <typename Duration>
Status LoadDuration(const YAML::Node& root, const char* key, Duration* out) {
  if (!root[key]) return Status::Ok();
  auto ms = copy::ParseDurationMs(root[key].as<std::string>());
  if (!ms.ok()) return ms.status().WithContext(key);
  *out = std::chrono::duration_cast<Duration>(*ms);
  return Status::Ok();
}

// A duration in whole seconds at `node`, the error naming `key`.
Result<std::chrono::seconds> SecondsAt(const YAML::Node& node, const std::string& key) {
  auto d = copy::ParseDuration(node.as<std::string>());
  if (!d.ok()) return d.status().WithContext(key);
  return d;
}

// How regcache treats its upstreams and clients when things go wrong (docs/serve.md).
Status LoadPolicy(const YAML::Node& root, ServeConfig* c) {
  auto& p = c->policy;
  RC_RETURN_IF_ERROR(LoadCount(root, "upstream_concurrency", &p.request_threads));
  RC_RETURN_IF_ERROR(LoadCount(root, "upstream_queue", &p.request_queue));
  RC_RETURN_IF_ERROR(LoadCount(root, "fill_threads", &p.fill_threads));
  RC_RETURN_IF_ERROR(LoadCount(root, "fill_queue", &p.fill_queue));
  RC_RETURN_IF_ERROR(LoadCount(root, "max_connections", &c->server.max_connections));
  size_t failures = static_cast<size_t>(p.breaker.failures);
  RC_RETURN_IF_ERROR(LoadCount(root, "breaker_failures", &failures));
  p.breaker.failures = static_cast<int>(failures);
  RC_RETURN_IF_ERROR(LoadDuration(root, "upstream_timeout", &p.timeout));
  RC_RETURN_IF_ERROR(LoadDuration(root, "breaker_open", &p.breaker.open_for));
  RC_RETURN_IF_ERROR(LoadDuration(root, "revalidate_wait", &c->server.revalidate_wait));
  RC_RETURN_IF_ERROR(LoadDuration(root, "negative_ttl", &c->cache.negative_ttl));
  RC_RETURN_IF_ERROR(LoadDuration(root, "write_timeout", &c->server.write_timeout));
  RC_RETURN_IF_ERROR(LoadDuration(root, "fill_start_timeout", &c->server.fill_start_timeout));
  if (root["max_size"]) {
    RC_RETURN_IF_ERROR(cache::ParseStorageSize(root["max_size"].as<std::string>(), &c->storage)
                           .WithContext("max_size"));
  }
  if (root["metadata_retention"]) {
    RC_ASSIGN_OR_RETURN(auto r, SecondsAt(root["metadata_retention"], "metadata_retention"));
    if (r.count() < 3600) return InvalidArgument("metadata_retention must be at least 1h");
    c->storage.retention = std::chrono::duration_cast<std::chrono::hours>(r);
  }
  if (p.timeout.count() < 100) return InvalidArgument("upstream_timeout must be at least 100ms");
  if (c->server.write_timeout.count() < 1) return InvalidArgument("write_timeout must be >= 1s");
  p.breaker.max_open_for = std::max(p.breaker.max_open_for, p.breaker.open_for);
  // A blob may stall mid-body longer than a request may take to begin.
  p.stall = std::max(p.stall, std::chrono::duration_cast<std::chrono::seconds>(p.timeout));
  return Status::Ok();
}

// A list of strings at `n` (a YAML sequence), none of them empty.
Result<std::vector<std::string>> StringList(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence()) return InvalidArgument(where + " must be a list");
  std::vector<std::string> out;
  for (const auto& item : n) {
    if (!item.IsScalar() || item.as<std::string>().empty()) {
      return InvalidArgument(where + " entries must be non-empty strings");
    }
    out.push_back(item.as<std::string>());
  }
  return out;
}

// auth: {htpasswd: FILE, realm, anonymous: [paths], user_failures, failure_delay,
// max_failure_delay, failure_window, address_failures, verified_ttl}.
Status LoadAuth(const YAML::Node& n, ServeConfig* c) {
  // The lockout these configured (one wall per address) became back-offs per user name.
  for (const char* gone : {"max_failures", "lockout"}) {
    if (n.IsMap() && n[gone]) {
      return InvalidArgument(std::string("auth.") + gone +
                             " is no longer a setting: failed logins now back off per user name "
                             "and address (auth.user_failures, auth.failure_delay, "
                             "auth.max_failure_delay) and per address (auth.address_failures); "
                             "see docs/serve.md, \"Authentication\"");
    }
  }
  RC_RETURN_IF_ERROR(copy::CheckYamlKeys(
      n,
      {"htpasswd", "realm", "anonymous", "user_failures", "failure_delay", "max_failure_delay",
       "failure_window", "address_failures", "verified_ttl"},
      "auth"));
  auto& a = c->auth;
  if (!n["htpasswd"]) {
    return InvalidArgument("auth needs 'htpasswd': a file of bcrypt entries (htpasswd -B)");
  }
  a.htpasswd = n["htpasswd"].as<std::string>();
  if (n["realm"]) a.realm = n["realm"].as<std::string>();
  if (n["anonymous"] && n["anonymous"].IsNull()) {
    a.anonymous.clear();  // `anonymous:` with nothing after it: every path needs credentials
  } else if (n["anonymous"]) {
    RC_ASSIGN_OR_RETURN(a.anonymous, StringList(n["anonymous"], "auth.anonymous"));
  }
  if (n["user_failures"]) a.user_failures = n["user_failures"].as<int>();
  if (n["address_failures"]) a.address_failures = n["address_failures"].as<int>();
  for (auto [key, field] : {std::pair{"failure_delay", &a.failure_delay},
                            {"max_failure_delay", &a.max_failure_delay},
                            {"failure_window", &a.failure_window},
                            {"verified_ttl", &a.verified_ttl}}) {
    if (n[key]) {
      RC_ASSIGN_OR_RETURN(*field, SecondsAt(n[key], std::string("auth.") + key));
    }
  }
  return http::ValidateAuthOptions(a);
}

// backing: "URL/PREFIX", or a mapping with url (and optionally prefix, credentials, TLS and copy
// settings).
Status LoadBacking(const YAML::Node& n, ServeConfig* c) {
  if (n.IsScalar()) {
    RC_ASSIGN_OR_RETURN(c->backing, ParseBackingUrl(n.as<std::string>()));
    return Status::Ok();
  }
  if (!n.IsMap()) return InvalidArgument("backing must be a URL or a mapping");
  RC_RETURN_IF_ERROR(copy::CheckYamlKeys(n,
                                         {"url", "prefix", "username", "password", "password_env",
                                          "insecure", "ca_file", "upload_threads", "max_queue"},
                                         "backing"));
  if (!n["url"]) return InvalidArgument("backing needs 'url'");
  RC_ASSIGN_OR_RETURN(BackingConfig b, ParseBackingUrl(n["url"].as<std::string>()));
  if (n["prefix"]) b.options.prefix = n["prefix"].as<std::string>();
  RC_ASSIGN_OR_RETURN(b.registry.credentials, copy::CredentialsFromYaml(n, "backing"));
  if (n["insecure"]) b.registry.insecure = n["insecure"].as<bool>();
  if (n["ca_file"]) b.registry.ca_file = n["ca_file"].as<std::string>();
  if (n["upload_threads"]) b.options.threads = n["upload_threads"].as<int>();
  if (n["max_queue"]) b.options.max_queue = n["max_queue"].as<size_t>();
  if (b.options.threads < 1 || b.options.threads > 64) {
    return InvalidArgument("backing.upload_threads must be between 1 and 64");
  }
  if (b.options.max_queue < 1) return InvalidArgument("backing.max_queue must be at least 1");
  c->backing = std::move(b);
  return Status::Ok();
}

// tls: {cert: FILE, key: FILE, client_ca: FILE, watch_interval: 5s, handshake_timeout: 5s,
// max_handshakes: 256}. The files are read when the server starts (and on reload), where a bad
// one is reported.
Status LoadTls(const YAML::Node& n, http::TlsOptions* tls) {
  if (!n.IsMap()) return InvalidArgument("tls must be a mapping: {cert: FILE, key: FILE}");
  RC_RETURN_IF_ERROR(copy::CheckYamlKeys(
      n, {"cert", "key", "client_ca", "watch_interval", "handshake_timeout", "max_handshakes"},
      "tls"));
  if (!n["cert"] || !n["key"]) return InvalidArgument("tls needs both 'cert' and 'key'");
  tls->cert = n["cert"].as<std::string>();
  tls->key = n["key"].as<std::string>();
  if (n["client_ca"]) tls->client_ca = n["client_ca"].as<std::string>();
  RC_RETURN_IF_ERROR(LoadDuration(n, "watch_interval", &tls->watch_interval));
  RC_RETURN_IF_ERROR(LoadDuration(n, "handshake_timeout", &tls->handshake_timeout));
  if (tls->handshake_timeout.count() < 1 || tls->handshake_timeout.count() > 60) {
    return InvalidArgument("tls.handshake_timeout must be between 1s and 60s");
  }
  return LoadCount(n, "max_handshakes", &tls->max_handshakes).WithContext("tls");
}

Status LoadNode(const YAML::Node& root, ServeConfig* c) {
  if (!root.IsMap()) return InvalidArgument("serve config must be a YAML mapping");
  RC_RETURN_IF_ERROR(copy::CheckYamlKeys(
      root,
      {"listen", "data_dir", "default_upstream", "upstreams", "io_threads", "worker_threads",
       "fill_threads", "shutdown_grace", "idle_timeout", "access_log", "log_level",
       "upstream_timeout", "upstream_concurrency", "upstream_queue", "fill_queue",
       "revalidate_wait", "negative_ttl", "breaker_failures", "breaker_open", "write_timeout",
       "max_connections", "fill_start_timeout", "max_size", "metadata_retention", "backing",
       "auth", "tls"},
      "serve config"));
  if (root["listen"]) RC_RETURN_IF_ERROR(ParseListen(root["listen"].as<std::string>(), &c->server));
  if (root["data_dir"]) c->data_dir = root["data_dir"].as<std::string>();
  if (root["io_threads"]) c->server.io_threads = root["io_threads"].as<int>();
  if (root["worker_threads"]) c->server.worker_threads = root["worker_threads"].as<int>();
  RC_RETURN_IF_ERROR(LoadPolicy(root, c));
  if (root["access_log"]) c->server.access_log = root["access_log"].as<bool>();
  if (root["log_level"]) c->log_level = root["log_level"].as<std::string>();
  if (root["shutdown_grace"]) {
    RC_ASSIGN_OR_RETURN(c->server.shutdown_grace,
                        SecondsAt(root["shutdown_grace"], "shutdown_grace"));
  }
  if (root["idle_timeout"]) {
    RC_ASSIGN_OR_RETURN(c->server.idle_timeout,
                        SecondsAt(root["idle_timeout"], "idle_timeout"));
  }
  if (c->server.io_threads < 1 || c->server.worker_threads < 1) {
    return InvalidArgument("thread counts must be at least 1");
  }
  if (auto ups = root["upstreams"]) {
    if (!ups.IsSequence()) return InvalidArgument("upstreams must be a list");
    c->upstreams.clear();
    for (size_t i = 0; i < ups.size(); ++i) {
      const auto& n = ups[i];
      std::string where = "upstreams[" + std::to_string(i) + "]";
      RC_RETURN_IF_ERROR(copy::CheckYamlKeys(n,
                                             {"name", "url", "username", "password", "password_env",
                                              "insecure", "ca_file", "tag_ttl", "ttl_rules",
                                              "allow", "deny"},
                                             where));
      cache::UpstreamConfig u;
      if (!n["name"] || !n["url"]) return InvalidArgument(where + " needs 'name' and 'url'");
      u.name = n["name"].as<std::string>();
      if (!cache::IsValidUpstreamName(u.name)) {
        return InvalidArgument(where + ".name: '" + u.name + "'" + kUpstreamNameRule);
      }
      u.url = n["url"].as<std::string>();
      RC_ASSIGN_OR_RETURN(u.credentials, copy::CredentialsFromYaml(n, where));
      if (n["insecure"]) u.insecure = n["insecure"].as<bool>();
      if (n["ca_file"]) u.ca_file = n["ca_file"].as<std::string>();
      if (n["tag_ttl"]) {
        RC_ASSIGN_OR_RETURN(u.tag_ttl, SecondsAt(n["tag_ttl"], where + ".tag_ttl"));
      }
      if (auto rules = n["ttl_rules"]) {
        if (!rules.IsSequence()) return InvalidArgument(where + ".ttl_rules must be a list");
        for (const auto& r : rules) {
          RC_RETURN_IF_ERROR(copy::CheckYamlKeys(r, {"pattern", "ttl"}, where + ".ttl_rules"));
          if (!r["pattern"] || !r["ttl"])
            return InvalidArgument(where + ".ttl_rules entries need pattern and ttl");
          RC_ASSIGN_OR_RETURN(auto ttl, SecondsAt(r["ttl"], where + ".ttl_rules.ttl"));
          u.ttl_rules.push_back({r["pattern"].as<std::string>(), ttl});
        }
      }
      if (n["allow"]) {
        RC_ASSIGN_OR_RETURN(u.allow, StringList(n["allow"], where + ".allow"));
      }
      if (n["deny"]) {
        RC_ASSIGN_OR_RETURN(u.deny, StringList(n["deny"], where + ".deny"));
      }
      c->upstreams.push_back(std::move(u));
    }
    if (!root["default_upstream"] && !c->upstreams.empty())
      c->default_upstream = c->upstreams[0].name;
  }
  if (root["default_upstream"]) c->default_upstream = root["default_upstream"].as<std::string>();
  if (auto b = root["backing"]) RC_RETURN_IF_ERROR(LoadBacking(b, c));
  if (auto a = root["auth"]) RC_RETURN_IF_ERROR(LoadAuth(a, c));
  if (auto t = root["tls"]) RC_RETURN_IF_ERROR(LoadTls(t, &c->server.tls));
  return Status::Ok();
}

}  // namespace

http::ServerOptions DefaultServerOptions() {
  http::ServerOptions options;
  options.io_threads = AvailableCpus();
  return options;
}

Status ParseListen(const std::string& text, http::ServerOptions* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos)
    return InvalidArgument("listen address '" + text + "' needs :PORT");
  std::string host = text.substr(0, colon);
  auto port = ParseUint(text.substr(colon + 1));
  if (!port || *port > 65535)
    return InvalidArgument("invalid port in listen address '" + text + "'");
  if (StartsWith(host, "[") && EndsWith(host, "]")) host = host.substr(1, host.size() - 2);
  out->host = host.empty() ? "0.0.0.0" : host;
  out->port = static_cast<uint16_t>(*port);
  return Status::Ok();
}

Status LoadServeConfig(const std::string& yaml_text, ServeConfig* config) {
  try {
    return LoadNode(YAML::Load(yaml_text), config);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("serve config: ") + e.what());
  }
}

Result<BackingConfig> ParseBackingUrl(const std::string& text) {
  const bool http = StartsWith(text, "http://");
  if (!http && !StartsWith(text, "https://")) {
    return InvalidArgument("backing URL '" + text +
                           "' must start with https:// or http:// (e.g. https://host/cache)");
  }
  const size_t host_at = http ? 7 : 8;
  const size_t slash = text.find('/', host_at);
  BackingConfig b;
  b.registry.name = "backing";
  b.registry.url = text.substr(0, slash);
  std::string prefix = slash == std::string::npos ? "" : text.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (!prefix.empty() && !oci::IsValidRepository(prefix)) {
    return InvalidArgument("backing URL '" + text + "': '" + prefix +
                           "' is not a valid repository prefix");
  }
  b.options.prefix = prefix;
  if (!oci::IsValidRegistryHost(b.registry.url.substr(host_at))) {
    return InvalidArgument("backing URL '" + text + "': invalid host");
  }
  return b;
}

Result<cache::UpstreamConfig> ParseUpstreamFlag(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    return InvalidArgument(
        "--upstream takes NAME=URL, e.g. docker.io=https://registry-1.docker.io");
  }
  cache::UpstreamConfig u;
  u.name = text.substr(0, eq);
  u.url = text.substr(eq + 1);
  if (!cache::IsValidUpstreamName(u.name)) {
    return InvalidArgument("--upstream " + text + ": the name '" + u.name + "'" +
                           kUpstreamNameRule);
  }
  return u;
}

}  // namespace regcache::app
