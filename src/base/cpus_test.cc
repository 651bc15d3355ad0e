#include "base/cpus.h"

#include <gtest/gtest.h>
#include <sched.h>

namespace regcache {
namespace {

TEST(CpusTest, ParsesCgroupCpuMax) {
  EXPECT_EQ(CpusFromCgroupMax("max 100000\n"), std::nullopt);  // no quota
  EXPECT_EQ(CpusFromCgroupMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupMax("150000 100000"), 2);  // 1.5 CPUs: two loops, not one
  EXPECT_EQ(CpusFromCgroupMax("50000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupMax(""), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("garbage"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("-5 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupMax("100000 0"), std::nullopt);
}

TEST(CpusTest, NeverMoreThanTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int available = AvailableCpus();
  EXPECT_GE(available, 1);
  EXPECT_LE(available, CPU_COUNT(&set));
}

}  // namespace
}  // namespace regcache
