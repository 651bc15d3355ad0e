#include "copy/client_pool.h"

namespace regcache::copy {

ClientPool::ClientPool(upstream::ClientOptions base, std::string docker_config_dir)
    : base_(std::move(base)),
      source_credentials_(std::make_shared<upstream::CredentialResolver>(docker_config_dir)),
      destination_credentials_(std::make_shared<upstream::CredentialResolver>(docker_config_dir)) {}

void ClientPool::Configure(const std::string& registry, Role role, RegistrySettings settings) {
  std::lock_guard<std::mutex> lock(mu_);
  if (settings.credentials) {
    (role == Role::kSource ? source_credentials_ : destination_credentials_)
        ->SetExplicit(registry, *settings.credentials);
  }
  settings_[{registry, role}] = std::move(settings);
}

upstream::RegistryClient& ClientPool::Get(const std::string& registry, Role role) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(registry, role);
  auto it = clients_.find(key);
  if (it != clients_.end()) return *it->second;
  upstream::ClientOptions options = base_;
  options.push = role == Role::kDestination;
  options.credentials = role == Role::kSource ? source_credentials_ : destination_credentials_;
  if (auto s = settings_.find(key); s != settings_.end()) {
    if (s->second.insecure) options.insecure_registries.push_back(registry);
    if (!s->second.ca_file.empty()) options.transport.ca_file = s->second.ca_file;
  }
  auto client = upstream::NewRegistryClient(registry, std::move(options));
  auto& ref = *client;
  clients_[key] = std::move(client);
  return ref;
}

}  // namespace regcache::copy
