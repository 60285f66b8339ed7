// WeightTable::fuse (batchrl_mtf/weight_table.hpp): the scores of a request's candidates, formula
// sum or logsum (block by block, the logarithms vectorised where the CPU allows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "batchrl_mtf/weight_table.hpp"
#include "table_internal.hpp"

#if defined(__x86_64__) && defined(__GLIBC__) && !defined(BATCHRL_MTF_NO_MVEC)
#include <immintrin.h>
// glibc's vector math library (libmvec): log of 4 doubles (AVX2) or 8 (AVX-512), within 4 ulp.
extern "C" __m256d _ZGVdN4v_log(__m256d);
extern "C" __m512d _ZGVeN8v_log(__m512d);
#define BATCHRL_MTF_MVEC 1
#endif

namespace batchrl_mtf {

using detail::kBlock;
using detail::num;

namespace {

// Logarithms of a block: glibc's vector math library (libmvec) where the CPU allows -- 8 lanes with
// AVX-512, 4 with AVX2, chosen at run time (portable: the library is built for baseline x86-64) --
// else std::log. libmvec is within 4 ulp (measured: at most 2 ulp from std::log on 4M values).
#ifdef BATCHRL_MTF_MVEC
__attribute__((target("avx2"))) void log_avx2(double* x, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, _ZGVdN4v_log(_mm256_loadu_pd(x + i)));
  if (i < n) {  // the tail through the same vector code (every value gets the same bits)
    alignas(32) double t[4] = {1.0, 1.0, 1.0, 1.0};
    std::memcpy(t, x + i, (n - i) * sizeof(double));
    _mm256_store_pd(t, _ZGVdN4v_log(_mm256_load_pd(t)));
    std::memcpy(x + i, t, (n - i) * sizeof(double));
  }
}
__attribute__((target("avx512f"))) void log_avx512(double* x, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm512_storeu_pd(x + i, _ZGVeN8v_log(_mm512_loadu_pd(x + i)));
  if (i < n) {
    alignas(64) double t[8] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
    std::memcpy(t, x + i, (n - i) * sizeof(double));
    _mm512_store_pd(t, _ZGVeN8v_log(_mm512_load_pd(t)));
    std::memcpy(x + i, t, (n - i) * sizeof(double));
  }
}
// 2 = AVX-512F, 1 = AVX2, 0 = neither (libgcc also checks that the OS saves the vector registers).
const int kVectorLevel = [] {
  __builtin_cpu_init();  // needed before main (static initialisation)
  return __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
}();
#endif

/** x[i] = log(x[i]) for n values (vectorised where the CPU allows). */
void log_inplace(double* x, std::size_t n) noexcept {
#ifdef BATCHRL_MTF_MVEC
  if (kVectorLevel == 2) {
    log_avx512(x, n);
    return;
  }
  if (kVectorLevel == 1) {
    log_avx2(x, n);
    return;
  }
#endif
  for (std::size_t i = 0; i < n; ++i) x[i] = std::log(x[i]);
}

/**
 * One block of fuse_logsum for nb candidates of K tasks (K = 0: k at run time): x = p + beta, the
 * logarithms, out[i] = sum_t w[t] * log(x[i * K + t]) in task order. Returns a word whose sign bit
 * is set when some prediction is not in [+0.0, 1.0] (then the caller looks again): a double in
 * that range has bits b <= kOne, any other value (negative, -0.0 too, above 1, NaN) sets the sign
 * bit of (kOne - b) | b -- integer operations that vectorise.
 */
template <std::size_t K>
inline __attribute__((always_inline)) std::uint64_t fuse_block_k(const double* p, const double* beta_rep,
                                                                 const double* w, std::size_t k, std::size_t nb,
                                                                 double* x, double* out) noexcept {
  constexpr std::uint64_t kOne = 0x3FF0000000000000u;
  const std::size_t kk = K ? K : k, m = nb * kk;
  std::uint64_t bad = 0;
  for (std::size_t j = 0; j < m; ++j) {
    std::uint64_t b;
    std::memcpy(&b, p + j, sizeof b);
    bad |= (kOne - b) | b;
    x[j] = p[j] + beta_rep[j];
  }
  log_inplace(x, m);
  for (std::size_t i = 0; i < nb; ++i) {
    const double* xi = x + i * kk;
    double s = 0.0;
    for (std::size_t t = 0; t < kk; ++t) s += w[t] * xi[t];
    out[i] = s;
  }
  return bad;
}

#define BATCHRL_MTF_FUSE_BLOCK_BODY                                      \
  switch (k) {                                                           \
    case 1: return fuse_block_k<1>(p, beta_rep, w, k, nb, x, out);      \
    case 2: return fuse_block_k<2>(p, beta_rep, w, k, nb, x, out);      \
    case 3: return fuse_block_k<3>(p, beta_rep, w, k, nb, x, out);      \
    case 4: return fuse_block_k<4>(p, beta_rep, w, k, nb, x, out);      \
    case 5: return fuse_block_k<5>(p, beta_rep, w, k, nb, x, out);      \
    case 6: return fuse_block_k<6>(p, beta_rep, w, k, nb, x, out);      \
    case 8: return fuse_block_k<8>(p, beta_rep, w, k, nb, x, out);      \
    case 10: return fuse_block_k<10>(p, beta_rep, w, k, nb, x, out);    \
    case 12: return fuse_block_k<12>(p, beta_rep, w, k, nb, x, out);    \
    case 16: return fuse_block_k<16>(p, beta_rep, w, k, nb, x, out);    \
    default: return fuse_block_k<0>(p, beta_rep, w, k, nb, x, out);     \
  }

std::uint64_t fuse_block_base(const double* p, const double* beta_rep, const double* w, std::size_t k,
                              std::size_t nb, double* x, double* out) noexcept {
  BATCHRL_MTF_FUSE_BLOCK_BODY
}

#ifdef BATCHRL_MTF_MVEC
// The same code compiled for AVX2 (the loops get 4 lanes), chosen at run time.
__attribute__((target("avx2"))) std::uint64_t fuse_block_avx2(const double* p, const double* beta_rep,
                                                              const double* w, std::size_t k, std::size_t nb,
                                                              double* x, double* out) noexcept {
  BATCHRL_MTF_FUSE_BLOCK_BODY
}
#endif
#undef BATCHRL_MTF_FUSE_BLOCK_BODY

std::uint64_t fuse_block(const double* p, const double* beta_rep, const double* w, std::size_t k, std::size_t nb,
                         double* x, double* out) noexcept {
#ifdef BATCHRL_MTF_MVEC
  if (kVectorLevel >= 1) return fuse_block_avx2(p, beta_rep, w, k, nb, x, out);
#endif
  return fuse_block_base(p, beta_rep, w, k, nb, x, out);
}

}  // namespace

Status WeightTable::fuse(const double* preds, std::size_t n, const double* w, double* scores) const noexcept {
  const std::size_t k = tasks_.size();
  if (logsum_) return fuse_logsum(preds, n, w, scores);
  try {
    for (std::size_t i = 0; i < n; ++i) {
      const double* p = preds + i * k;
      double s = 0.0;
      bool nan = false;
      for (std::size_t t = 0; t < k; ++t) {
        double v = p[t];
        if (std::isnan(v)) { nan = true; continue; }
        if (std::isinf(v))
          return Status::error("preds." + tasks_[t] + "[" + std::to_string(i) +
                               "]: expected a finite number or null, found " + num(v));
        s += w[t] * v;
      }
      if (!nan && std::isinf(s)) return Status::error("fuse: a score overflows a double");
      scores[i] = nan ? NAN : s;
    }
  } catch (...) {
    return Status::error("fuse: out of memory");
  }
  return Status{};
}

Status WeightTable::fuse_logsum(const double* preds, std::size_t n, const double* w, double* scores) const noexcept {
  // Block by block (kBlock candidates, in the L1 cache): x = p + beta with a branch-free range
  // check, the block's logarithms in one vectorised pass, the weighted sums per candidate; a second
  // look only when some value is NaN (a missing prediction: NaN score) or out of range (an error).
  const std::size_t k = tasks_.size();
  thread_local std::vector<double> x;
  try {
    if (x.size() < kBlock * k) x.resize(kBlock * k);
  } catch (...) {
    return Status{false, {}};
  }
  const double* beta_rep = beta_rep_.data();  // beta repeated for kBlock candidates
  bool any_nan = false;
  for (std::size_t b0 = 0; b0 < n; b0 += kBlock) {
    const std::size_t nb = std::min(kBlock, n - b0);
    const double* p = preds + b0 * k;
    if (fuse_block(p, beta_rep, w, k, nb, x.data(), scores + b0) >> 63) {
      for (std::size_t j = 0; j < nb * k; ++j) {
        double v = p[j];
        if (v >= 0.0 && v <= 1.0) continue;
        if (std::isnan(v)) {
          any_nan = true;
          continue;
        }
        try {
          return Status::error("preds." + tasks_[j % k] + "[" + std::to_string(b0 + j / k) +
                               "]: expected a probability in [0, 1] or null, found " + num(v));
        } catch (...) {
          return Status{false, {}};
        }
      }
    }
  }
  bool inf = false;
  for (std::size_t i = 0; i < n; ++i) inf |= std::isinf(scores[i]);
  if (any_nan) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t t = 0; t < k; ++t)
        if (std::isnan(preds[i * k + t])) scores[i] = NAN;
  }
  if (inf) {
    for (std::size_t i = 0; i < n; ++i)
      if (std::isinf(scores[i])) return Status{false, "fuse: a score overflows a double"};
  }
  return Status{};
}

}  // namespace batchrl_mtf
