#include "oci/mirror.h"

#include "oci/reference.h"

namespace regcache::oci {

std::string MirrorRepository(std::string_view prefix, std::string_view registry,
                             std::string_view repository) {
  std::string out;
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  while (!prefix.empty() && prefix.front() == '/') prefix.remove_prefix(1);
  if (!prefix.empty()) out.append(prefix).push_back('/');
  for (char c : NormalizeRegistryHost(registry)) out.push_back(c == ':' ? '-' : c);
  out.push_back('/');
  out.append(repository);
  return out;
}

}  // namespace regcache::oci
