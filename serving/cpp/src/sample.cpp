// WeightTable::sample_from_draws (batchrl_mtf/weight_table.hpp): exploratory weights for a state,
// drawn in its row's sampling box, and their log-density. (sample() is the template in the header.)
#include "batchrl_mtf/weight_table.hpp"
#include "table_internal.hpp"

namespace batchrl_mtf {

using detail::num;

Status WeightTable::sample_from_draws(const double* x, const std::function<bool(double*)>& next_draw,
                                      Sample* out) const {
  if (!exploration_) return Status::error("draws: the table has no exploration block to sample from");
  const std::size_t k = tasks_.size();
  int r0 = row_index(x);
  std::size_t row = r0 < 0 ? n_rows_ : static_cast<std::size_t>(r0);
  out->weights.assign(k, 0.0);
  double q = 0.0;
  std::size_t used = 0;
  for (std::size_t t = 0; t < k; ++t) {
    const double mu = weights_[row * k + t], lo = sample_lo_[row * k + t], hi = sample_hi_[row * k + t];
    while (true) {
      double dr;
      if (!next_draw(&dr))
        return Status::error("sample: ran out of draws after " + std::to_string(used) + " (task '" + tasks_[t] +
                             "' still rejected); pass more draws");
      ++used;
      if (exploration_ == 2) {
        if (!(dr >= 0.0 && dr < 1.0)) return Status::error("sample: expected uniform draws in [0, 1), found " + num(dr));
        out->weights[t] = lo + (hi - lo) * dr;
        break;
      }
      double v = mu + scale_[t] * dr;
      if (lo <= v && v <= hi) {
        out->weights[t] = v;
        double z = (v - mu) / scale_[t];
        q += z * z;
        break;
      }
    }
  }
  out->behavior_logp = logp_const_[row] - 0.5 * q;
  return Status{};
}

}  // namespace batchrl_mtf
