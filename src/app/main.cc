// regcache command line: `ensure`, `sync` (and `serve`, the caching registry, when built).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "app/exit_codes.h"
#include "app/serve_command.h"
#include "base/strings.h"
#include "base/version.h"
#include "copy/client_pool.h"
#include "copy/copier.h"
#include "copy/sync.h"
#include "copy/yaml_config.h"
#include "oci/reference.h"

namespace regcache::app {
namespace {

struct CommonFlags {
  std::vector<std::string> insecure_registries;
  std::string ca_file;
  int retries = 4;
  int retry_base_ms = 300;
  int timeout_s = 30;
  std::string docker_config;
};

upstream::ClientOptions BaseOptions(const CommonFlags& f) {
  upstream::ClientOptions o;
  for (const auto& h : f.insecure_registries)
    o.insecure_registries.push_back(oci::NormalizeRegistryHost(h));
  o.transport.ca_file = f.ca_file;
  o.transport.stall_timeout_s = f.timeout_s;
  o.retry.max_attempts = std::max(1, f.retries);
  o.retry.base_delay = std::chrono::milliseconds(f.retry_base_ms);
  return o;
}

void AddCommonFlags(CLI::App* cmd, CommonFlags& f) {
  cmd->add_option("--insecure-registry", f.insecure_registries,
                  "HOST[:PORT] that may be reached over plain HTTP or unverified TLS (repeatable; "
                  "loopback hosts always may)")
      ->allow_extra_args(false);
  cmd->add_option("--ca-file", f.ca_file,
                  "extra CA certificates (PEM) to trust, besides the system's")
      ->check(CLI::ExistingFile);
  cmd->add_option("--retries", f.retries, "attempts per request on 408/429/5xx/network errors")
      ->capture_default_str();
  cmd->add_option("--retry-base-ms", f.retry_base_ms,
                  "first backoff delay; doubles per retry, jittered")
      ->capture_default_str();
  cmd->add_option("--timeout", f.timeout_s,
                  "abort a transfer that moves no data for this many seconds")
      ->capture_default_str();
  cmd->add_option("--docker-config", f.docker_config,
                  "directory holding config.json (default $DOCKER_CONFIG or ~/.docker)");
}

// Progress on stderr, only when it is a terminal.
class ProgressLine {
 public:
  ProgressLine() : enabled_(isatty(2)) {}
  void Update(const copy::CopyProgress& p) {
    if (!enabled_) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && p.blobs_done < p.blobs_total) return;
    last_ = now;
    std::fprintf(stderr, "\r\033[Kblobs %llu/%llu  %s / %s", (unsigned long long)p.blobs_done,
                 (unsigned long long)p.blobs_total, HumanBytes(p.bytes_done).c_str(),
                 HumanBytes(p.bytes_total).c_str());
    shown_ = true;
  }
  void Clear() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};
};

// A reference as written, without its tag or digest: "host:5000/a/b:v1@sha256:…" ->
// "host:5000/a/b" (a ':' after the last '/' starts a tag; one before it is a port).
std::string RepositoryOf(std::string_view reference) {
  reference = reference.substr(0, reference.find('@'));
  const size_t slash = reference.rfind('/');
  const size_t colon = reference.find(':', slash == std::string_view::npos ? 0 : slash);
  return std::string(reference.substr(0, colon));
}

nlohmann::json ResultJson(const copy::EnsureResult& r, const std::string& printed_dst) {
  nlohmann::json j;
  j["source"] = r.source.String();
  j["source_digest"] =
      r.source_digest.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.source_digest.str());
  j["destination"] = printed_dst;
  j["destination_digest"] = r.destination_digest.str();
  // The tag written (the printed reference is by digest only); null for a copy by digest.
  j["destination_tag"] =
      r.destination.tag.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.destination.tag);
  j["copied"] = r.copied;
  j["reason"] = r.reason;
  j["manifests"] = {{"pushed", r.manifests_pushed}, {"present", r.manifests_present}};
  j["blobs"] = {
      {"skipped", r.blobs_skipped}, {"mounted", r.blobs_mounted}, {"copied", r.blobs_copied}};
  j["bytes_copied"] = r.bytes_copied;
  j["source_requests"] = {{"total", r.source_requests.Total()},
                          {"manifest_gets", r.source_requests.manifest_gets}};
  if (r.source_rate_limit.remaining >= 0) {
    j["ratelimit"] = {{"limit", r.source_rate_limit.limit},
                      {"remaining", r.source_rate_limit.remaining},
                      {"window_s", r.source_rate_limit.window_s},
                      {"source", r.source_rate_limit.source}};
  } else {
    j["ratelimit"] = nullptr;
  }
  return j;
}

struct EnsureFlags {
  std::string src, dst;
  std::string mirror;  // --mirror PREFIX, instead of DST
  std::string src_creds, dest_creds;
  bool check_upstream = false;
  std::vector<std::string> platforms;
  int jobs = 4;
  bool json = false;
};

// Where ensure writes: DST as given, or SRC's place under --mirror PREFIX. `printed` is what
// the printed reference is made of: DST exactly as given, or the whole mirror reference.
Result<oci::Reference> EnsureDestination(const EnsureFlags& f, const oci::Reference& src,
                                         std::string* printed) {
  if (!f.mirror.empty()) {
    if (!f.dst.empty()) return InvalidArgument("give DST or --mirror PREFIX, not both");
    auto prefix = copy::ParseMirrorPrefix(f.mirror);
    if (!prefix.ok()) return prefix.status().WithContext("--mirror");
    auto dst = copy::MirrorDestination(*prefix, src);
    if (dst.ok()) *printed = dst->String();
    return dst;
  }
  if (f.dst.empty()) return InvalidArgument("DST or --mirror PREFIX is required");
  auto dst = oci::ParseReference(f.dst, /*default_tag=*/false);
  if (!dst.ok()) return dst.status().WithContext("DST");
  // A destination without tag or digest takes the source's tag, not "latest".
  if (dst->tag.empty() && !dst->digest) {
    if (src.tag.empty()) {
      return InvalidArgument("DST needs a tag when SRC is given by digest only");
    }
    dst->tag = src.tag;
  }
  *printed = f.dst;
  return dst;
}

int RunEnsure(const EnsureFlags& f, const CommonFlags& common) {
  auto src = oci::ParseReference(f.src);
  if (!src.ok()) return ReportFailure(src.status().WithContext("SRC"));
  std::string printed;
  auto dst = EnsureDestination(f, *src, &printed);
  if (!dst.ok()) return ReportFailure(dst.status());
  copy::EnsureOptions options;
  options.check_upstream = f.check_upstream;
  options.parallel_blobs = f.jobs;
  for (const auto& p : f.platforms) {
    auto parsed = oci::ParsePlatform(p);
    if (!parsed.ok()) return ReportFailure(parsed.status());
    options.platforms.push_back(*parsed);
  }
  copy::ClientPool pool(BaseOptions(common), common.docker_config);
  if (!f.src_creds.empty()) {
    auto c = upstream::ParseUserPass(f.src_creds);
    if (!c.ok()) return ReportFailure(c.status().WithContext("--src-creds"));
    pool.Configure(src->registry, copy::Role::kSource, {*c, false, ""});
  }
  if (!f.dest_creds.empty()) {
    auto c = upstream::ParseUserPass(f.dest_creds);
    if (!c.ok()) return ReportFailure(c.status().WithContext("--dest-creds"));
    pool.Configure(dst->registry, copy::Role::kDestination, {*c, false, ""});
  }
  ProgressLine progress;
  options.on_progress = [&](const copy::CopyProgress& p) { progress.Update(p); };
  copy::Copier copier(pool.Get(src->registry, copy::Role::kSource),
                      pool.Get(dst->registry, copy::Role::kDestination), options);
  auto result = copier.Ensure(*src, *dst);
  progress.Clear();
  if (!result.ok()) return ReportFailure(result.status());

  // The repository by digest, so that `FROM $(regcache ensure ...)` pins it. Without the tag:
  // skopeo (containers/image) refuses a reference with both ("Docker references with both a
  // tag and digest are currently not supported"); --json keeps the tag as destination_tag.
  printed = RepositoryOf(printed) + "@" + result->destination_digest.str();
  if (f.json) {
    std::cout << ResultJson(*result, printed).dump() << std::endl;
  } else {
    std::cout << printed << std::endl;
  }
  if (result->source_rate_limit.remaining >= 0 && isatty(2)) {
    std::fprintf(stderr, "%s: %lld pulls remaining\n", src->registry.c_str(),
                 (long long)result->source_rate_limit.remaining);
  }
  return kExitOk;
}

struct SyncFlags {
  std::string file;
  bool dry_run = false;
  bool json = false;
};

int RunSync(const SyncFlags& f, const CommonFlags& common) {
  std::ifstream in(f.file);
  if (!in) return ReportFailure(InvalidArgument("cannot read sync file " + f.file));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = copy::ParseSyncConfig(ss.str());
  if (!config.ok()) return ReportFailure(config.status().WithContext(f.file));
  copy::ClientPool pool(BaseOptions(common), common.docker_config);
  copy::SyncRunner runner(pool, *config);
  std::mutex log_mu;
  auto log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    std::fprintf(stderr, "regcache sync: %s\n", line.c_str());
  };
  std::vector<copy::SyncOutcome> outcomes;
  auto items = runner.Expand(outcomes, log);
  auto ran = runner.Run(items, f.dry_run, log);
  outcomes.insert(outcomes.begin(), ran.begin(), ran.end());
  if (f.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& o : outcomes) {
      nlohmann::json j =
          o.status.ok() ? ResultJson(o.result, o.destination) : nlohmann::json::object();
      j["source"] = o.source;
      j["destination"] = o.destination;
      j["ok"] = o.status.ok();
      if (!o.status.ok()) j["error"] = o.status.ToString();
      if (o.status.ok() && o.result.would_copy) j["would_copy"] = true;
      arr.push_back(j);
    }
    std::cout << arr.dump(2) << std::endl;
  } else {
    std::cout << copy::FormatSyncSummary(outcomes, f.dry_run);
  }
  int worst = kExitOk;
  for (const auto& o : outcomes) {
    if (!o.status.ok()) worst = kExitFailure;
  }
  // A run stopped by the rate-limit guard says so in its exit code.
  for (const auto& o : outcomes) {
    if (o.status.code() == Code::kRateLimited) worst = kExitRateLimited;
  }
  return worst;
}

// CLI11 answers a command it does not know ("regcache prefetch") with "A subcommand is
// required". This names the word and the commands instead: "unknown command 'prefetch'
// (commands: ensure, sync, serve; see --help)", or "" when the command
// line names a command or asks for help or the version. The top level takes no option with a
// value, so the first word that is not an option is the command.
std::string UnknownCommand(CLI::App& app, int argc, char** argv) {
  const char* given = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help" || arg == "--version") return "";
    if (!given && !arg.empty() && arg[0] != '-') given = argv[i];
  }
  std::string commands;
  for (const CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) {
    if (given && command->get_name() == given) return "";
    commands += (commands.empty() ? "" : ", ") + command->get_name();
  }
  const std::string what = given ? "unknown command '" + PrintablePrefix(given, 64) + "'"
                                 : std::string("a command is required");
  return what + " (commands: " + commands + "; see --help)";
}

}  // namespace
}  // namespace regcache::app

int main(int argc, char** argv) {
  using namespace regcache::app;
  std::signal(SIGPIPE, SIG_IGN);  // a closed pipe or socket is an error return, not a death

  CLI::App app{
      "regcache: copy container images between registries without a daemon, and cache them"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("regcache ") + regcache::kVersion);

  CommonFlags common;
  EnsureFlags ef;
  auto* ensure = app.add_subcommand(
      "ensure",
      "Make DST (or SRC's place under --mirror PREFIX) hold SRC: if it exists, do nothing (no "
      "request to SRC's registry); else copy every platform byte-exact, streaming blobs registry "
      "to registry. Prints DST's repository by digest, REPOSITORY@sha256:<digest> (without "
      "the tag, which skopeo would refuse; --json has it as destination_tag).");
  ensure->add_option("SRC", ef.src, "source image, e.g. ruby:3.3 or ghcr.io/org/app:1.0")
      ->required();
  ensure->add_option("DST", ef.dst,
                     "destination, e.g. 123.dkr.ecr.us-east-1.amazonaws.com/mirror/ruby:3.3 "
                     "(without a tag: SRC's tag); omit it with --mirror");
  ensure
      ->add_option("--mirror", ef.mirror,
                   "PREFIX (HOST[:PORT]/PATH) instead of DST: copy to "
                   "PREFIX/<SRC's registry>/<SRC's repository> with SRC's tag, the layout of "
                   "serve's backing tier, e.g. --mirror 127.0.0.1:5001/cache puts ruby:3.3 at "
                   "127.0.0.1:5001/cache/docker.io/library/ruby:3.3")
      ->type_name("PREFIX");
  ensure->add_option("--src-creds", ef.src_creds, "USER:PASS for the source registry");
  ensure->add_option("--dest-creds", ef.dest_creds, "USER:PASS for the destination registry");
  ensure->add_flag(
      "--check-upstream", ef.check_upstream,
      "when DST exists, HEAD SRC (costs no Docker Hub pull) and copy if the tag moved");
  ensure
      ->add_option("--platform", ef.platforms,
                   "os/arch[/variant] to copy (repeatable). Changes the digest: one platform "
                   "copies that platform's manifest, several write a new index")
      ->allow_extra_args(false);
  ensure->add_option("-j,--jobs", ef.jobs, "blobs copied in parallel")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  ensure->add_flag("--json", ef.json,
                   "print a JSON object instead of the reference (destination: the printed "
                   "reference; destination_tag: the tag written)");
  AddCommonFlags(ensure, common);

  SyncFlags sf;
  auto* sync =
      app.add_subcommand("sync", "Ensure every image listed in a YAML file; print a summary table");
  sync->add_option("FILE", sf.file, "sync file (see docs/sync.md)")->required();
  sync->add_flag("--dry-run", sf.dry_run,
                 "list what would be copied; write nothing, GET no manifests");
  sync->add_flag("--json", sf.json, "print JSON instead of the table");
  AddCommonFlags(sync, common);

  ServeConfig serve_config;
  std::string serve_config_file, serve_listen, serve_data_dir, serve_default, serve_ttl;
  std::vector<std::string> serve_upstreams;
  bool no_access_log = false;
  auto* serve = app.add_subcommand(
      "serve",
      "Run a pull-through caching registry (docker/containerd/podman mirror). With no arguments: "
      "listen on :5000, data in ./regcache-data, upstreams docker.io (default), ghcr.io, quay.io, "
      "registry.k8s.io, gcr.io, public.ecr.aws");
  serve
      ->add_option("--config", serve_config_file,
                   "YAML config file (see docs/serve.md); flags override it")
      ->check(CLI::ExistingFile);
  serve->add_option("--listen", serve_listen, "ADDR:PORT to listen on (default :5000)");
  serve->add_option("--data-dir", serve_data_dir,
                    "where blobs and metadata live (default ./regcache-data)");
  serve
      ->add_option(
          "--upstream", serve_upstreams,
          "NAME=URL (repeatable; replaces the embedded upstreams; the first is the default)")
      ->allow_extra_args(false);
  serve->add_option("--default-upstream", serve_default,
                    "upstream for requests without ?ns= or a prefix");
  serve->add_option("--tag-ttl", serve_ttl,
                    "how long a tag is served without asking upstream (e.g. 5m)");
  serve->add_flag("--no-access-log", no_access_log, "do not log every request");
  std::string serve_check_config;
  serve
      ->add_option("--check-config", serve_check_config,
                   "validate a config file (with the other flags applied) and exit: 0 if "
                   "regcache serve would start with it, else 2 naming the bad key")
      ->check(CLI::ExistingFile);
  std::string serve_backing;
  serve->add_option("--backing", serve_backing,
                    "shared backing registry and prefix, e.g. https://123456789012.dkr.ecr."
                    "eu-west-1.amazonaws.com/cache (see docs/serve.md)");
  std::string serve_max_size;
  serve->add_option("--max-size", serve_max_size,
                    "cap on stored blobs: 20GiB, 500MiB, or 80% of the file system (default 80%)");
  std::string serve_htpasswd;
  serve->add_option("--htpasswd", serve_htpasswd,
                    "require Basic credentials from clients, checked against this file of "
                    "bcrypt entries (htpasswd -B); default: anonymous access");
  regcache::http::TlsOptions serve_tls;
  serve->add_option("--tls-cert", serve_tls.cert,
                    "serve HTTPS with this PEM certificate (its chain after it); reloaded on "
                    "SIGHUP and when the file changes");
  serve->add_option("--tls-key", serve_tls.key, "the certificate's PEM private key");
  serve->add_option("--tls-client-ca", serve_tls.client_ca,
                    "require client certificates issued by these PEM CAs (mutual TLS)");

  if (std::string unknown = UnknownCommand(app, argc, argv); !unknown.empty()) {
    std::fprintf(stderr, "regcache: invalid_argument: %s\n", unknown.c_str());
    return kExitInvalidInput;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "regcache: invalid_argument: %s (see --help)\n", e.what());
    return kExitInvalidInput;
  }
  if (ensure->parsed()) return RunEnsure(ef, common);
  if (sync->parsed()) return RunSync(sf, common);
  if (serve->parsed()) {
    if (!serve_check_config.empty()) {
      if (!serve_config_file.empty() && serve_config_file != serve_check_config) {
        return ReportFailure(
            regcache::InvalidArgument("give --config or --check-config, not both"));
      }
      serve_config_file = serve_check_config;
    }
    // The file, then the flags over it: at start, and again on SIGHUP (live reload).
    auto load = [=](ServeConfig* c) -> regcache::Status {
      *c = ServeConfig{};
      if (!serve_config_file.empty()) {
        std::ifstream in(serve_config_file);
        if (!in) return regcache::IoError("cannot read " + serve_config_file);
        std::stringstream ss;
        ss << in.rdbuf();
        RC_RETURN_IF_ERROR(LoadServeConfig(ss.str(), c).WithContext(serve_config_file));
      }
      if (!serve_listen.empty()) RC_RETURN_IF_ERROR(ParseListen(serve_listen, &c->server));
      if (!serve_data_dir.empty()) c->data_dir = serve_data_dir;
      if (!serve_upstreams.empty()) {
        c->upstreams.clear();
        for (const auto& u : serve_upstreams) {
          RC_ASSIGN_OR_RETURN(auto parsed, ParseUpstreamFlag(u));
          c->upstreams.push_back(std::move(parsed));
        }
        c->default_upstream = c->upstreams[0].name;
      }
      if (!serve_default.empty()) c->default_upstream = serve_default;
      if (!serve_ttl.empty()) {
        auto ttl = regcache::copy::ParseDuration(serve_ttl);
        if (!ttl.ok()) return ttl.status().WithContext("--tag-ttl");
        for (auto& u : c->upstreams) u.tag_ttl = *ttl;
      }
      if (no_access_log) c->server.access_log = false;
      if (!serve_max_size.empty()) {
        RC_RETURN_IF_ERROR(regcache::cache::ParseStorageSize(serve_max_size, &c->storage)
                               .WithContext("--max-size"));
      }
      if (!serve_htpasswd.empty()) c->auth.htpasswd = serve_htpasswd;
      if (!serve_tls.cert.empty()) c->server.tls.cert = serve_tls.cert;
      if (!serve_tls.key.empty()) c->server.tls.key = serve_tls.key;
      if (!serve_tls.client_ca.empty()) c->server.tls.client_ca = serve_tls.client_ca;
      if (!serve_backing.empty()) {
        auto b = ParseBackingUrl(serve_backing);
        if (!b.ok()) return b.status().WithContext("--backing");
        c->backing = std::move(*b);
      }
      return regcache::Status::Ok();
    };
    if (regcache::Status s = load(&serve_config); !s.ok()) return ReportFailure(s);
    serve_config.reload = load;
    if (!serve_check_config.empty()) {
      regcache::Status s = CheckServeConfig(serve_config);
      if (!s.ok()) return ReportFailure(s.WithContext(serve_check_config));
      std::printf("%s: ok\n", serve_check_config.c_str());
      return kExitOk;
    }
    return RunServe(serve_config);
  }
  return kExitInvalidInput;
}
