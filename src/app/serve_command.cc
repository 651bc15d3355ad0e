#include "app/serve_command.h"

#include <spdlog/spdlog.h>

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
  auto server = http::CreateServer(config.server, cache, **upstreams, metrics);
  if (!server.ok()) {
    (*upstreams)->Shutdown();
    return ReportFailure(server.status());
  }
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
  spdlog::info("regcache serve listening on {}:{}, data in {} (cap {}), upstreams: {}",
               config.server.host, (*server)->port(), config.data_dir,
               HumanBytes(evictor.cap_bytes()), names);
  (*server)->Run();  // returns with all upstream work cancelled and drained
  {
    std::lock_guard<std::mutex> lock(flush_mu);
    stop_flush = true;
  }
  flush_cv.notify_all();
  flusher.join();
  cache.FlushAccess();
  server->reset();
  evictor.Stop();
  spdlog::info("stopped");
  return kExitOk;
}

}  // namespace regcache::app
