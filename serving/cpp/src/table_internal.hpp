// Internal to the batchrl_mtf_serving library (in src/, not on the public include path): what
// its .cpp files share.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace batchrl_mtf {
namespace detail {

/** Candidates per block of fuse_logsum: its k * kBlock values stay in the L1 cache. */
constexpr std::size_t kBlock = 256;

/** A double as messages show it (%.17g: it reads back as the same double). */
inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace detail
}  // namespace batchrl_mtf
