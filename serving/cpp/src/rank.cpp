// WeightTable::rank (batchrl_mtf/weight_table.hpp): candidate indices from the best score to the
// worst, by a stable radix sort of keys that order the scores.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "batchrl_mtf/weight_table.hpp"

namespace batchrl_mtf {

namespace {

/** Stable insertion sort of idx[0..m) by key[idx] (ascending; equal keys keep their order). */
void insertion_sort(const std::uint64_t* key, int* idx, std::size_t m) noexcept {
  for (std::size_t i = 1; i < m; ++i) {
    const int v = idx[i];
    const std::uint64_t kv = key[v];
    std::size_t j = i;
    for (; j > 0 && key[idx[j - 1]] > kv; --j) idx[j] = idx[j - 1];
    idx[j] = v;
  }
}

/**
 * Stable sort of idx[0..m) by key[idx] (ascending; equal keys keep their order). One counting pass
 * on (key - min) >> shift, the shift leaving at most 2^11 buckets (about m), puts every index into
 * its bucket; a bucket of more than 16 is sorted again the same way (on its own range, at least 6
 * bits narrower: at most 11 levels for 64-bit keys), and one insertion sort over the whole range
 * then sorts the short buckets (it never moves an index past its bucket: O(m * 16) at most).
 * tmp: m ints; count: 2048. identity: the first call, which writes idx (0 .. m-1 sorted) and is
 * given the keys' min lo and max hi.
 */
void radix_sort(const std::uint64_t* key, int* idx, int* tmp, std::size_t m, std::uint32_t* count,
                bool identity = false, std::uint64_t lo = 0, std::uint64_t hi = 0) noexcept;

/** The bucket pass of radix_sort; identity: idx[i] == i (the first level: direct loads). */
template <bool kIdentity>
inline __attribute__((always_inline)) void bucket_pass(const std::uint64_t* key, int* idx, int* tmp, std::size_t m,
                                                       std::uint32_t* count, std::uint64_t lo, std::uint64_t hi) noexcept {
  int bits = 4;  // about log2(m) digit bits, 4 to 11
  while (bits < 11 && (std::size_t(1) << bits) < m) ++bits;
  const std::uint64_t range = hi - lo;
  const int top = 63 - __builtin_clzll(range);
  const int shift = top + 1 > bits ? top + 1 - bits : 0;
  const std::uint32_t nb = static_cast<std::uint32_t>(range >> shift) + 1;
  auto k = [&](std::size_t i) { return kIdentity ? key[i] : key[idx[i]]; };
  std::memset(count, 0, nb * sizeof(std::uint32_t));
  for (std::size_t i = 0; i < m; ++i) ++count[(k(i) - lo) >> shift];
  std::uint32_t sum = 0, largest = 0;
  for (std::uint32_t d = 0; d < nb; ++d) {
    const std::uint32_t c = count[d];
    largest = std::max(largest, c);
    count[d] = sum;
    sum += c;
  }
  if (kIdentity) {
    for (std::size_t i = 0; i < m; ++i) idx[count[(key[i] - lo) >> shift]++] = static_cast<int>(i);
  } else {
    for (std::size_t i = 0; i < m; ++i) tmp[count[(key[idx[i]] - lo) >> shift]++] = idx[i];
    std::memcpy(idx, tmp, m * sizeof(int));
  }
  if (shift == 0) return;  // one key per bucket value: sorted
  if (largest > 16) {      // (rare: clustered keys) sort the large buckets on their own range
    for (std::size_t a = 0; a < m;) {
      const std::uint64_t d = (key[idx[a]] - lo) >> shift;
      std::size_t b = a + 1;
      while (b < m && ((key[idx[b]] - lo) >> shift) == d) ++b;
      if (b - a > 16) radix_sort(key, idx + a, tmp + a, b - a, count);
      a = b;
    }
  }
  insertion_sort(key, idx, m);
}

void radix_sort(const std::uint64_t* key, int* idx, int* tmp, std::size_t m, std::uint32_t* count, bool identity,
                std::uint64_t lo, std::uint64_t hi) noexcept {
  if (identity) {  // lo and hi given; idx is written
    if (lo == hi) {
      for (std::size_t i = 0; i < m; ++i) idx[i] = static_cast<int>(i);
      return;
    }
    bucket_pass<true>(key, idx, tmp, m, count, lo, hi);
    return;
  }
  if (m <= 16) {
    insertion_sort(key, idx, m);
    return;
  }
  lo = hi = key[idx[0]];
  for (std::size_t i = 1; i < m; ++i) {
    const std::uint64_t k = key[idx[i]];
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
  }
  if (lo == hi) return;  // all equal: already in order
  bucket_pass<false>(key, idx, tmp, m, count, lo, hi);
}

}  // namespace

void WeightTable::rank(const double* s, std::size_t n, int* order) noexcept {
  // Keys that order the scores from best to worst as unsigned 64-bit integers (NaN last; 0.0 and
  // -0.0 equal), then a stable radix sort of the candidate indices by key: exactly the order of a
  // full sort on (key, index), without data-dependent branches on the common path.
  if (n == 0) return;
  thread_local std::vector<std::uint64_t> keys;
  thread_local std::vector<int> tmp;
  try {
    if (keys.size() < n) {
      keys.resize(n);
      tmp.resize(n);
    }
  } catch (...) {  // out of memory: an insertion sort needs no buffer
    for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<int>(i);
    for (std::size_t i = 1; i < n; ++i) {
      int v = order[i];
      std::size_t j = i;
      auto better = [s](int a, int b) { return !std::isnan(s[a]) && (std::isnan(s[b]) || s[a] > s[b]); };
      while (j > 0 && better(v, order[j - 1])) {
        order[j] = order[j - 1];
        --j;
      }
      order[j] = v;
    }
    return;
  }
  std::uint64_t* key = keys.data();
  std::uint64_t lo = ~std::uint64_t(0), hi = 0;
  for (std::size_t i = 0; i < n; ++i) {  // branch-free
    const double d = s[i] + 0.0;            // -0.0 + 0.0 = +0.0: ties with 0.0
    std::uint64_t b;
    std::memcpy(&b, &d, sizeof b);
    const std::uint64_t neg = static_cast<std::uint64_t>(static_cast<std::int64_t>(b) >> 63);
    const std::uint64_t asc = b ^ (neg | (std::uint64_t(1) << 63));  // ascending order of d
    const std::uint64_t nan = -static_cast<std::uint64_t>((b & ~(std::uint64_t(1) << 63)) > 0x7FF0000000000000u);
    const std::uint64_t k = ~asc | nan;  // best first, NaN last
    key[i] = k;
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
  }
  std::uint32_t count[2048];
  radix_sort(key, order, tmp.data(), n, count, true, lo, hi);
}

}  // namespace batchrl_mtf
