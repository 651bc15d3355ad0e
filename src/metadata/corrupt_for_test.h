// Tests only: damages a real SQLite file the way a torn write or a bad disk block would, and
// makes a connection that has the file open notice it.
#pragma once

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace regcache::metadata::testing {

// Runs `sql` on a connection of its own (opened and closed here); the first column of the first
// row as an integer, or -1.
inline int64_t QueryInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int64_t out = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
      out = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return out;
}

// The root page of a table or index.
inline int64_t RootPage(const std::string& path, const std::string& name) {
  return QueryInt(path, "SELECT rootpage FROM sqlite_master WHERE name='" + name + "'");
}

// Writes pseudo-random bytes over page `page` (1-based) of the file. Page 1 holds the header:
// garbage there makes it "not a database".
inline bool OverwritePage(const std::string& path, int64_t page, uint32_t seed = 1) {
  int64_t page_size = QueryInt(path, "PRAGMA page_size");
  if (page_size <= 0) page_size = 4096;
  std::vector<char> garbage(static_cast<size_t>(page_size));
  std::mt19937 rng(seed);
  for (auto& c : garbage) c = static_cast<char>(rng());
  int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) return false;
  bool ok = ::pwrite(fd, garbage.data(), garbage.size(), (page - 1) * page_size) ==
            static_cast<ssize_t>(garbage.size());
  ::fsync(fd);
  ::close(fd);
  return ok;
}

// For a file another connection has open: first moves everything in the WAL into the main
// file (so that no good copy of the page is left there), then damages the page, then commits a
// write to `untouched_table` (an unrelated table), which makes every other connection drop its
// page cache at its next read and so read the damaged page from the file.
inline bool CorruptLivePage(const std::string& path, int64_t page,
                            const std::string& untouched_table_insert) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return false;
  }
  sqlite3_busy_timeout(db, 5000);
  // As a statement: it reads the schema first, so the connection knows the file is in WAL mode
  // (sqlite3_wal_checkpoint_v2 on a connection that has read nothing yet does nothing). Its
  // row's first column is 1 if the checkpoint could not complete.
  // Busy while the other connection keeps reading: tried again.
  int busy = -1;
  for (int attempt = 0; attempt < 100 && busy != 0; ++attempt) {
    if (attempt > 0) ::usleep(10000);
    busy = -1;
    sqlite3_exec(
        db, "PRAGMA wal_checkpoint(TRUNCATE)",
        [](void* out, int, char** values, char**) {
          *static_cast<int*>(out) = values[0] ? std::atoi(values[0]) : -1;
          return 0;
        },
        &busy, nullptr);
  }
  bool ok = busy == 0;
  ok = ok && OverwritePage(path, page);
  ok = ok &&
       sqlite3_exec(db, untouched_table_insert.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  sqlite3_close(db);
  return ok;
}

}  // namespace regcache::metadata::testing
