// Row lookup (batchrl_mtf/weight_table.hpp): the cell of a state's key values, its row and weights;
// and score(), the lookup + fuse + rank of one request.
#include <algorithm>
#include <cmath>

#include "batchrl_mtf/weight_table.hpp"

namespace batchrl_mtf {

int WeightTable::row_index(const double* x) const noexcept {
  std::int64_t cell = 0;
  for (std::size_t j = 0; j < edges_.size(); ++j) {
    if (std::isnan(x[j])) return -1;
    const auto& e = edges_[j];
    cell += static_cast<std::int64_t>(std::upper_bound(e.begin(), e.end(), x[j]) - e.begin()) * strides_[j];
  }
  return cell_row_[static_cast<std::size_t>(cell)];
}

const double* WeightTable::lookup(const double* x) const noexcept {
  int r = row_index(x);
  return &weights_[(r < 0 ? n_rows_ : static_cast<std::size_t>(r)) * tasks_.size()];
}

Status WeightTable::score(const double* key_values, const double* preds, std::size_t n, double* scores,
                          int* order) const noexcept {
  Status st = fuse(preds, n, lookup(key_values), scores);
  if (st.ok) rank(scores, n, order);
  return st;
}

}  // namespace batchrl_mtf
