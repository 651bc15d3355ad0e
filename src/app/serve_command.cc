#include "app/serve_command.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <filesystem>

#include "app/exit_codes.h"
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
  auto upstreams = cache::UpstreamSet::Create(config.upstreams, config.default_upstream, &metrics);
  if (!upstreams.ok()) return ReportFailure(upstreams.status());

  // Fills run on their own pool so long downloads never starve short lookups.
  boost::asio::thread_pool fills(static_cast<size_t>(config.fill_threads));
  cache::PullThroughCache cache(**blobs, **meta, metrics, [&fills](std::function<void()> task) {
    boost::asio::post(fills, std::move(task));
  });
  auto server = http::CreateServer(config.server, cache, **upstreams, metrics);
  if (!server.ok()) {
    fills.join();
    return ReportFailure(server.status());
  }
  std::string names;
  for (auto* u : (*upstreams)->All()) {
    names += (names.empty() ? "" : ", ") + u->name() +
             (u == (*upstreams)->Default() ? " (default)" : "");
  }
  spdlog::info("regcache serve listening on {}:{}, data in {}, upstreams: {}", config.server.host,
               (*server)->port(), config.data_dir, names);
  (*server)->Run();
  server->reset();
  fills.join();  // fills finish (or fail) on their own; none is left half-visible
  spdlog::info("stopped");
  return kExitOk;
}

}  // namespace regcache::app
