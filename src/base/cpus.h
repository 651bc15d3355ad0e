// How many CPUs this process can actually use, for sizing event loops: Linux's affinity mask
// (taskset, cpusets) lowered to a cgroup CPU quota (v2 `cpu.max` or v1 `cpu.cfs_quota_us`: a
// container's `--cpus`, systemd's CPUQuota=), which a plain count of the machine's cores ignores.
#pragma once

#include <optional>
#include <string_view>

namespace regcache {

// At least 1. Reads sched_getaffinity and the quota of this process's cgroup.
int AvailableCpus();

// The CPUs a cgroup v2 `cpu.max` text allows ("QUOTA PERIOD", rounded up; at least 1); nullopt
// for "max …" (no quota) or text that does not parse.
std::optional<int> CpusFromCgroupMax(std::string_view text);

}  // namespace regcache
