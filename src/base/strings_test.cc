#include "base/strings.h"

#include <gtest/gtest.h>

#include "base/status.h"

namespace regcache {
namespace {

TEST(StringsTest, ParseUintRejectsJunkAndOverflow) {
  EXPECT_EQ(ParseUint("0"), 0u);
  EXPECT_EQ(ParseUint("18446744073709551615"), 18446744073709551615ull);
  EXPECT_FALSE(ParseUint("18446744073709551616"));
  EXPECT_FALSE(ParseUint("-1"));
  EXPECT_FALSE(ParseUint(""));
  EXPECT_FALSE(ParseUint("12a"));
}

TEST(StringsTest, Base64RoundTripsAllLengths) {
  std::string s;
  for (int i = 0; i < 20; ++i) {
    s.push_back(static_cast<char>(i * 37));
    auto decoded = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, s);
  }
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_FALSE(Base64Decode("a$b="));
}

TEST(StringsTest, UrlEncodeKeepsUnreserved) {
  EXPECT_EQ(UrlEncode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
  EXPECT_EQ(UrlEncode("A-z_0.~"), "A-z_0.~");
}

TEST(StringsTest, SplitAndTrim) {
  EXPECT_EQ(Split("a,b,,c", ',').size(), 4u);
  EXPECT_EQ(Trim("  x y \t"), "x y");
  EXPECT_TRUE(EqualsIgnoreCase("Content-Type", "content-type"));
}

TEST(StringsTest, PrintablePrefixKeepsALogLineOneShortLine) {
  EXPECT_EQ(PrintablePrefix("v1.2", 40), "v1.2");
  EXPECT_EQ(PrintablePrefix("v1\n\x1b[31m\xc3\xa9", 40), "v1??[31m??");
  EXPECT_EQ(PrintablePrefix(std::string(50000, 'v'), 3), "vvv…");
  EXPECT_EQ(PrintablePrefix("abc", 3), "abc");
}

TEST(StatusTest, ResultCarriesValueOrError) {
  Result<int> good(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  Result<int> bad(NotFound("nope"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kNotFound);
  EXPECT_EQ(bad.status().WithContext("ctx").message(), "ctx: nope");
}

TEST(StatusTest, OriginTravelsWithContextAndNeverMarksSuccess) {
  Status s = Integrity("digest mismatch").WithOrigin(Origin::kBacking);
  EXPECT_EQ(s.origin(), Origin::kBacking);
  EXPECT_EQ(s.WithContext("fill").origin(), Origin::kBacking);
  EXPECT_EQ(s.WithContext("fill").code(), Code::kIntegrity);
  EXPECT_EQ(Integrity("x").origin(), Origin::kUnspecified);
  EXPECT_EQ(Status::Ok().WithOrigin(Origin::kUpstream).origin(), Origin::kUnspecified);
}

}  // namespace
}  // namespace regcache
