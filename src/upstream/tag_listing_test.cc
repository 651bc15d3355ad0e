#include "upstream/tag_listing.h"

#include <gtest/gtest.h>

namespace regcache::upstream {
namespace {

using Clock = TagListing::Clock;

const Clock::time_point kStart = Clock::now();

TEST(NextLinkTargetTest, FindsRelNextAmongLinkValues) {
  EXPECT_EQ(NextLinkTarget({"</v2/a/tags/list?last=x&n=2>; rel=\"next\""}),
            "/v2/a/tags/list?last=x&n=2");
  EXPECT_EQ(NextLinkTarget({"<https://r.io/p1>; rel=\"prev\", <https://r.io/p3>; rel=\"next\""}),
            "https://r.io/p3");
  EXPECT_EQ(NextLinkTarget({"<p>; rel=prev", "<q>; title=\"x\"; REL=\"last Next\""}), "q");
  EXPECT_EQ(NextLinkTarget({"<q>;rel=next"}), "q");
  EXPECT_EQ(NextLinkTarget({"<p>; rel=\"prev\""}), "");
  EXPECT_EQ(NextLinkTarget({"<p>; prel=\"next\""}), "");
  EXPECT_EQ(NextLinkTarget({"<p; rel=\"next\""}), "");
  EXPECT_EQ(NextLinkTarget({}), "");
}

// Reads pages `bodies` with their Link headers until the listing ends or fails.
struct Page {
  std::string body;
  std::vector<std::string> links;
};

Status Feed(TagListing& listing, const Page& page, Clock::time_point now = kStart) {
  RC_RETURN_IF_ERROR(listing.Receive(page.body, now));
  return listing.EndPage(page.links, now);
}

TEST(TagListingTest, FollowsRelativeLinksOnTheOrigin) {
  TagListing listing("r.io/lib/app", "https://R.io", "lib/app", kStart);
  EXPECT_EQ(listing.next_page(), "/v2/lib/app/tags/list?n=1000");
  ASSERT_TRUE(Feed(listing, {R"({"name":"lib/app","tags":["v1","v2"]})",
                             {"</v2/lib/app/tags/list?last=v2&n=1000>; rel=\"next\""}})
                  .ok());
  EXPECT_EQ(listing.next_page(), "/v2/lib/app/tags/list?last=v2&n=1000");
  // Relative to the page, a bare query, an absolute URL on the same origin: all followed.
  ASSERT_TRUE(Feed(listing, {R"({"tags":["v3"]})", {"<list?last=v3>; rel=\"next\""}}).ok());
  EXPECT_EQ(listing.next_page(), "/v2/lib/app/tags/list?last=v3");
  ASSERT_TRUE(Feed(listing, {R"({"tags":["v4"]})", {"<?last=v4&n=9>; rel=\"next\""}}).ok());
  EXPECT_EQ(listing.next_page(), "/v2/lib/app/tags/list?last=v4&n=9");
  ASSERT_TRUE(Feed(listing, {R"({"tags":["v5"]})",
                             {"<https://r.io/v2/lib/app/tags/list?last=v5>; rel=\"next\""}})
                  .ok());
  EXPECT_EQ(listing.next_page(), "/v2/lib/app/tags/list?last=v5");
  ASSERT_TRUE(Feed(listing, {R"({"tags":["v6"]})", {}}).ok());
  EXPECT_EQ(listing.next_page(), "");
  TagList list = std::move(listing).Take();
  EXPECT_EQ(list.tags, (std::vector<std::string>{"v1", "v2", "v3", "v4", "v5", "v6"}));
  EXPECT_EQ(list.stopped, "");
}

// The page is parsed as a stream: only the top-level "tags" array's strings are kept.
TEST(TagListingTest, KeepsOnlyTheStringsOfTheTopLevelTagsArray) {
  TagListing listing("r.io/a", "https://r.io", "a", kStart);
  ASSERT_TRUE(Feed(listing, {R"({"manifest":{"tags":["no"],"x":["no"]},"tags":["v1",2,null,["no"],
                               {"tags":"no"},"v2",[["no"]],"v3"],"child":{"tags":["no"]}})",
                             {"</v2/a/tags/list?last=v3>; rel=\"next\""}})
                  .ok());
  ASSERT_TRUE(Feed(listing, {R"({"tags":null})", {}}).ok());  // distribution: no tags
  EXPECT_EQ(std::move(listing).Take().tags, (std::vector<std::string>{"v1", "v2", "v3"}));

  for (const char* bad : {"[\"v1\"]", "\"v1\"", "{\"tags\":[\"v1\"]", "", "{} {}", "null"}) {
    TagListing l("r.io/a", "https://r.io", "a", kStart);
    Status s = Feed(l, {bad, {}});
    EXPECT_EQ(s.code(), Code::kUnavailable) << bad;
    EXPECT_NE(s.message().find("tag list of r.io/a is not a JSON object"), std::string::npos)
        << bad << ": " << s.message();
  }
}

// A Link loop grew sync's memory without bound. Back to a page already read: stop, with what
// was listed, and say so.
TEST(TagListingTest, StopsOnALinkBackToAPageAlreadyRead) {
  const Page loop = {R"({"tags":["v1","v2"]})", {"</v2/a/tags/list?n=1000&last=v2>; rel=\"next\""}};
  TagListing listing("r.io/a", "https://r.io", "a", kStart);
  ASSERT_TRUE(Feed(listing, loop).ok());
  EXPECT_EQ(listing.next_page(), "/v2/a/tags/list?n=1000&last=v2");
  ASSERT_TRUE(Feed(listing, loop).ok());  // the same `last` again
  EXPECT_EQ(listing.next_page(), "");
  TagList list = std::move(listing).Take();
  EXPECT_EQ(list.tags.size(), 4u);
  EXPECT_NE(list.stopped.find("the tag list of r.io/a leads back to a page already read (last=v2)"),
            std::string::npos)
      << list.stopped;

  // Without `last`: the same URL again, the first page's included.
  TagListing first("r.io/a", "https://r.io", "a", kStart);
  ASSERT_TRUE(Feed(first, {R"({"tags":["v1"]})", {"</v2/a/tags/list?n=1000>; rel=next"}}).ok());
  EXPECT_EQ(first.next_page(), "");
  EXPECT_NE(std::move(first).Take().stopped.find("'/v2/a/tags/list?n=1000'"), std::string::npos);

  // A `last` that goes back to an earlier one is a loop too.
  TagListing back("r.io/a", "https://r.io", "a", kStart);
  for (const char* last : {"a", "b", "a"}) {
    ASSERT_TRUE(Feed(back, {R"({"tags":[]})",
                            {std::string("</v2/a/tags/list?last=") + last + ">; rel=\"next\""}})
                    .ok());
  }
  EXPECT_EQ(back.next_page(), "");
}

// sync followed Link to other hosts. Another origin (host, port or scheme) is an error, and
// nothing is asked of it.
TEST(TagListingTest, RefusesALinkToAnotherOrigin) {
  for (const char* link : {"<http://127.0.0.1:5001/v2/a/tags/list?last=v1>; rel=\"next\"",
                           "<https://evil.example/v2/a/tags/list?last=v1>; rel=\"next\"",
                           "<//evil.example/v2/a/tags/list?last=v1>; rel=\"next\"",
                           "<https://127.0.0.1:5000/v2/a/tags/list?last=v1>; rel=\"next\""}) {
    TagListing listing("127.0.0.1:5000/a", "http://127.0.0.1:5000", "a", kStart);
    Status s = Feed(listing, {R"({"tags":["v1"]})", {link}});
    EXPECT_EQ(s.code(), Code::kUnavailable) << link;
    EXPECT_NE(s.message().find("its Link leads to another origin"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("(http://127.0.0.1:5000) only"), std::string::npos) << s.message();
    EXPECT_EQ(listing.next_page(), "") << link;
  }
}

TEST(TagListingTest, BoundsNameTheBoundAndTheRepository) {
  // Bytes: a page past the bound fails as it arrives, before it is parsed.
  {
    TagListing listing("r.io/a", "https://r.io", "a", kStart);
    std::string chunk(1 << 20, ' ');
    Status s;
    size_t received = 0;
    while ((s = listing.Receive(chunk, kStart)).ok()) received += chunk.size();
    EXPECT_EQ(received, kMaxTagListBytes);
    EXPECT_EQ(s.code(), Code::kUnavailable);
    EXPECT_NE(s.message().find("listing tags of r.io/a: more than 64.0 MiB of pages (the bound"),
              std::string::npos)
        << s.message();
  }
  // Entries: counted as they are parsed.
  {
    TagListing listing("r.io/a", "https://r.io", "a", kStart);
    std::string body = "{\"tags\":[\"a\"";
    for (size_t i = 0; i < kMaxListedTags; ++i) body += ",\"a\"";
    body += "]}";
    Status s = Feed(listing, {body, {}});
    EXPECT_EQ(s.code(), Code::kUnavailable);
    EXPECT_NE(s.message().find("more than 1000000 entries"), std::string::npos) << s.message();
  }
  // Pages: each with a new `last`, no loop.
  {
    TagListing listing("r.io/a", "https://r.io", "a", kStart);
    Status s;
    size_t pages = 0;
    for (; s.ok() && pages <= kMaxTagListPages; ++pages) {
      s = Feed(listing, {"{\"tags\":[]}",
                         {"</v2/a/tags/list?last=" + std::to_string(pages) + ">; rel=\"next\""}});
    }
    EXPECT_EQ(pages, kMaxTagListPages);
    EXPECT_EQ(s.code(), Code::kUnavailable);
    EXPECT_NE(s.message().find("more than 10000 pages"), std::string::npos) << s.message();
  }
  // Time: for the whole listing, checked as bytes arrive and between pages.
  {
    TagListing listing("r.io/a", "https://r.io", "a", kStart);
    const Page next = {"{\"tags\":[]}", {"</v2/a/tags/list?last=x>; rel=\"next\""}};
    ASSERT_TRUE(Feed(listing, next, kStart + kTagListTimeout - std::chrono::seconds(1)).ok());
    Status s = listing.Receive("{", kStart + kTagListTimeout);
    EXPECT_EQ(s.code(), Code::kUnavailable);
    EXPECT_NE(s.message().find("not done after 10 minutes"), std::string::npos) << s.message();
    EXPECT_FALSE(listing.EndPage({}, kStart + kTagListTimeout).ok());
  }
}

TEST(TagListingTest, ARetriedPageStartsAgain) {
  TagListing listing("r.io/a", "https://r.io", "a", kStart);
  ASSERT_TRUE(listing.Receive(R"({"tags":["v1","v)", kStart).ok());
  listing.RestartPage();  // the connection broke; the page is asked again
  ASSERT_TRUE(Feed(listing, {R"({"tags":["v1","v2"]})", {}}).ok());
  EXPECT_EQ(std::move(listing).Take().tags, (std::vector<std::string>{"v1", "v2"}));
}

}  // namespace
}  // namespace regcache::upstream
