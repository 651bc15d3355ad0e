#include "app/serve_command.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "app/exit_codes.h"
#include "base/strings.h"
#include "cache/pull_through.h"
#include "metadata/metadata_store.h"
#include "storage/blob_store.h"

namespace regcache::app {

namespace {

// SIGHUP: reads the configuration again and applies what can change while serving — upstreams
// (added, removed, URL or credentials changed, TTLs, allow/deny lists), the users of the
// htpasswd file, the log level and other TLS files — without dropping a connection or a fill. A
// configuration that does not load or validate changes nothing. Settings that need a restart are
// named in the log. `served_tls`: the TLS files in use.
void Reload(const ServeConfig& running, cache::UpstreamSet& upstreams,
            http::Authenticator* auth, http::Server& server, http::TlsOptions& served_tls) {
  ServeConfig next;
  Status s = running.reload(&next);
  // The users are read before anything changes: a bad htpasswd file rejects the whole reload.
  std::shared_ptr<const http::Htpasswd> users;
  if (s.ok() && auth && !next.auth.htpasswd.empty()) {
    auto loaded = http::Htpasswd::Load(next.auth.htpasswd);
    if (loaded.ok()) {
      users = std::move(*loaded);
    } else {
      s = loaded.status().WithContext("auth");
    }
  }
  if (s.ok()) {
    s = upstreams.Reconfigure(next.upstreams, next.default_upstream, running.server.shutdown_grace);
  }
  if (!s.ok()) {
    spdlog::error("reload rejected, the running configuration stays: {}", s.ToString());
    return;
  }
  spdlog::set_level(spdlog::level::from_str(next.log_level));
  if (users) auth->SetUsers(std::move(users));
  std::vector<std::string> restart;
  if (next.server.host != running.server.host || next.server.port != running.server.port)
    restart.push_back("listen");
  if (next.data_dir != running.data_dir) restart.push_back("data_dir");
  if (next.server.io_threads != running.server.io_threads ||
      next.server.worker_threads != running.server.worker_threads)
    restart.push_back("io_threads/worker_threads");
  if (next.backing.has_value() != running.backing.has_value() ||
      (next.backing && (next.backing->registry.url != running.backing->registry.url ||
                        next.backing->options.prefix != running.backing->options.prefix)))
    restart.push_back("backing");
  const auto& na = next.auth;
  const auto& ra = running.auth;
  if (na.htpasswd.empty() != ra.htpasswd.empty() ||
      (auth &&
       (na.realm != ra.realm || na.anonymous != ra.anonymous ||
        na.user_failures != ra.user_failures || na.failure_delay != ra.failure_delay ||
        na.max_failure_delay != ra.max_failure_delay || na.failure_window != ra.failure_window ||
        na.address_failures != ra.address_failures || na.verified_ttl != ra.verified_ttl)))
    restart.push_back("auth");  // the users (the htpasswd file) are reloaded; the rest is not
  if (next.storage.max_bytes != running.storage.max_bytes ||
      next.storage.max_percent != running.storage.max_percent)
    restart.push_back("max_size");
  // The files in use were read again just before (the server does on SIGHUP); other files are
  // loaded now, or refused with the current ones kept (logged by the server).
  if (next.server.tls.enabled() != running.server.tls.enabled()) {
    restart.push_back("tls");
  } else if (next.server.tls.enabled() && next.server.tls != served_tls &&
             server.ReloadTls(next.server.tls).ok()) {
    served_tls = next.server.tls;
  }
  std::string names;
  for (auto* u : upstreams.All()) {
    names += (names.empty() ? "" : ", ") + u->name() +
             (u == upstreams.Default() ? " (default)" : "");
  }
  spdlog::info("reloaded the configuration: upstreams {}", names);
  for (const auto& key : restart) {
    spdlog::warn("reload: '{}' changed; it takes effect at the next restart", key);
  }
}

}  // namespace

Status CheckServeConfig(const ServeConfig& config) {
  cache::Metrics metrics;
  auto upstreams = cache::UpstreamSet::Create(config.upstreams, config.default_upstream, &metrics,
                                              "", config.policy);
  if (!upstreams.ok()) return upstreams.status();
  (*upstreams)->Shutdown();
  if (config.backing) {
    auto credentials = std::make_shared<upstream::CredentialResolver>("");
    auto client = cache::NewServeClient(config.backing->registry, credentials, config.policy,
                                        nullptr, std::make_shared<std::atomic<bool>>(false), true);
    if (!client.ok()) return client.status().WithContext("backing");
  }
  if (!config.auth.htpasswd.empty()) {
    auto auth = http::Authenticator::Create(config.auth, nullptr);
    if (!auth.ok()) return auth.status().WithContext("auth");
  }
  if (config.server.tls.enabled()) {
    auto tls = http::TlsContexts::Create(config.server.tls);
    if (!tls.ok()) return tls.status();
  }
  return Status::Ok();
}

int RunServe(const ServeConfig& config) {
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec)
    return ReportFailure(
        IoError("cannot create data directory " + config.data_dir + ": " + ec.message()));

  auto blobs = storage::OpenFilesystemBlobStore(config.data_dir);
  if (!blobs.ok()) return ReportFailure(blobs.status());
  auto meta = metadata::OpenSqliteMetadataStore(config.data_dir + "/metadata.db");
  if (!meta.ok()) return ReportFailure(meta.status());
  cache::Metrics metrics;
  std::shared_ptr<http::Authenticator> auth;
  if (!config.auth.htpasswd.empty()) {
    auto a = http::Authenticator::Create(config.auth, &metrics);
    if (!a.ok()) return ReportFailure(a.status().WithContext("auth"));
    auth = std::move(*a);
    std::string anonymous;
    for (const auto& p : config.auth.anonymous) anonymous += " " + p;
    spdlog::info("auth: Basic, {} user(s) from {}; without credentials:{}", auth->users(),
                 config.auth.htpasswd, anonymous.empty() ? " nothing" : anonymous);
  }
  auto upstreams = cache::UpstreamSet::Create(config.upstreams, config.default_upstream, &metrics,
                                              "", config.policy);
  if (!upstreams.ok()) return ReportFailure(upstreams.status());

  cache::PullThroughCache cache(**blobs, **meta, metrics, config.cache);
  cache::BlobLedger ledger;
  cache::Evictor evictor(**blobs, **meta, ledger, metrics, config.storage);
  if (Status s = evictor.Start(); !s.ok()) {
    (*upstreams)->Shutdown();
    return ReportFailure(s);
  }
  cache.AttachStorage(&ledger, &evictor);
  std::unique_ptr<cache::Backing> backing;
  auto backing_cancel = std::make_shared<std::atomic<bool>>(false);
  if (config.backing) {
    auto credentials = std::make_shared<upstream::CredentialResolver>("");
    auto reader = cache::NewServeClient(config.backing->registry, credentials, config.policy,
                                        &metrics, backing_cancel, false);
    auto writer = cache::NewServeClient(config.backing->registry, credentials, config.policy,
                                        &metrics, backing_cancel, true);
    if (!reader.ok() || !writer.ok()) {
      (*upstreams)->Shutdown();
      return ReportFailure((reader.ok() ? writer.status() : reader.status()).WithContext("backing"));
    }
    backing = std::make_unique<cache::Backing>(std::move(*reader), std::move(*writer),
                                               config.backing->options, **meta, **blobs, metrics);
    if (Status s = backing->Start(); !s.ok()) {
      (*upstreams)->Shutdown();
      return ReportFailure(s.WithContext("backing"));
    }
    cache.AttachBacking(backing.get());
    // Fills reading from the backing registry run on upstream threads: abort them with the rest.
    (*upstreams)->OnShutdown([backing_cancel] { backing_cancel->store(true); });
  }
  http::ServerOptions server_options = config.server;
  std::mutex reload_mu;
  http::Server* running_server = nullptr;  // set before Run(), and SIGHUP is handled in Run()
  http::TlsOptions served_tls = config.server.tls;
  if (config.reload) {
    server_options.on_reload = [&config, &upstreams, &reload_mu, &auth, &running_server,
                                &served_tls] {
      std::lock_guard<std::mutex> lock(reload_mu);
      Reload(config, **upstreams, auth.get(), *running_server, served_tls);
    };
  }
  auto server = http::CreateServer(server_options, cache, **upstreams, metrics, auth);
  if (!server.ok()) {
    (*upstreams)->Shutdown();
    return ReportFailure(server.status());
  }
  running_server = server->get();
  // Tag accesses are recorded in memory by hits and written in batches.
  std::mutex flush_mu;
  std::condition_variable flush_cv;
  bool stop_flush = false;
  std::thread flusher([&] {
    std::unique_lock<std::mutex> lock(flush_mu);
    while (!flush_cv.wait_for(lock, std::chrono::seconds(30), [&] { return stop_flush; })) {
      lock.unlock();
      cache.FlushAccess();
      lock.lock();
    }
  });
  std::string names;
  for (auto* u : (*upstreams)->All()) {
    names += (names.empty() ? "" : ", ") + u->name() +
             (u == (*upstreams)->Default() ? " (default)" : "");
  }
  const auto& tls = config.server.tls;
  spdlog::info("regcache serve listening on {}:{}{}, data in {} (cap {}), upstreams: {}{}",
               config.server.host, (*server)->port(),
               !tls.enabled()          ? " (plain HTTP)"
               : tls.client_ca.empty() ? " (HTTPS)"
                                       : " (HTTPS, client certificates required)",
               config.data_dir,
               HumanBytes(evictor.cap_bytes()), names,
               backing ? ", backing " + config.backing->registry.url + "/" +
                             config.backing->options.prefix
                       : std::string());
  (*server)->Run();  // returns with all upstream work cancelled and drained
  {
    std::lock_guard<std::mutex> lock(flush_mu);
    stop_flush = true;
  }
  flush_cv.notify_all();
  flusher.join();
  cache.FlushAccess();
  if (backing) {
    backing_cancel->store(true);
    backing->Shutdown();  // queued copies stay recorded; the next start resumes them
  }
  server->reset();
  evictor.Stop();
  spdlog::info("stopped");
  return kExitOk;
}

}  // namespace regcache::app
