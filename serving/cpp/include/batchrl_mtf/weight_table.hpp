// batchrl-mtf weight tables (batchrl-mtf/weight-table@1) in C++17: load, lookup, fuse, rank, sample.
//
// WeightTable::load validates everything the Python reference validates and throws
// batchrl_mtf::TableError (message: "<path>: <field>: expected ..., found ...") -- errors happen at
// load only. After load a table is immutable: every const method may be called from any number of
// threads at once. score() and its parts never throw: they report bad input through a Status.
//
// Implemented in serving/cpp/src/, one file per job: table_load.cpp (load, parse), lookup.cpp
// (row_index, lookup, score), fuse.cpp, rank.cpp and sample.cpp (sample_from_draws); the strict
// JSON reader (strict_json.hpp) in strict_json.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace batchrl_mtf {

/** A table file (or request) that does not follow the contract; what() names the field. */
class TableError : public std::runtime_error {
 public:
  explicit TableError(const std::string& what) : std::runtime_error(what) {}
};

/** The outcome of a hot-path call: ok, or a message naming the field (candidate, task). */
struct Status {
  bool ok = true;
  std::string message;
  static Status error(std::string m) { return Status{false, std::move(m)}; }
};

/** Weights and their log-density, from sample(). */
struct Sample {
  std::vector<double> weights;
  double behavior_logp = 0.0;
};

class WeightTable {
 public:
  static constexpr const char* kFormat = "batchrl-mtf/weight-table@1";
  static constexpr long kMaxCells = 1L << 22;

  /** Reads and validates a table file. @throws TableError */
  static WeightTable load(const std::string& path);
  /** Parses and validates UTF-8 JSON text; messages start with source. @throws TableError */
  static WeightTable parse(const std::string& text, const std::string& source);

  const std::vector<std::string>& tasks() const { return tasks_; }
  const std::vector<std::string>& key_names() const { return key_names_; }
  bool logsum() const { return logsum_; }
  bool has_exploration() const { return exploration_ != 0; }

  /** Row index for key values in key_names() order (NaN = missing); -1 for the default. */
  int row_index(const double* key_values) const noexcept;
  /** Weights (task order) for key values in key_names() order: O(keys * log edges). */
  const double* lookup(const double* key_values) const noexcept;

  /** Scores of n candidates; preds row-major (n, k) in task order; NaN prediction -> NaN score. */
  Status fuse(const double* preds, std::size_t n, const double* weights, double* scores) const noexcept;
  /** Candidate indices from the best score to the worst; ties by index; NaN last. */
  static void rank(const double* scores, std::size_t n, int* order) noexcept;
  /** lookup + fuse + rank for one request: weights_out (k), scores (n), order (n). */
  Status score(const double* key_values, const double* preds, std::size_t n, double* scores,
               int* order) const noexcept;

  /**
   * Exploratory weights from draws consumed in task order (the reference's sample_from_draws):
   * gaussian w = mu + sigma * z redrawn until inside the bounds; uniform w = lo + (hi - lo) * u.
   * next_draw returns false when no draw is left.
   */
  Status sample_from_draws(const double* key_values, const std::function<bool(double*)>& next_draw,
                           Sample* out) const;
  /** As sample_from_draws with a standard-normal / uniform [0,1) generator (e.g. std::mt19937_64). */
  template <class Rng>
  Status sample(const double* key_values, Rng& rng, Sample* out) const;

 private:
  WeightTable() = default;
  Status fuse_logsum(const double* preds, std::size_t n, const double* w, double* scores) const noexcept;
  std::vector<std::string> tasks_;
  bool logsum_ = true;
  std::vector<double> beta_;
  std::vector<double> beta_rep_;  // beta repeated for one block of candidates (fuse_logsum)
  std::vector<double> low_, high_;
  std::vector<std::string> key_names_;
  std::vector<std::vector<double>> edges_;
  std::vector<std::int64_t> strides_;
  std::vector<std::int32_t> cell_row_;
  std::vector<double> weights_;  // (n_rows + 1) x k, the default last
  std::size_t n_rows_ = 0;
  int exploration_ = 0;  // 0 none, 1 gaussian, 2 uniform
  std::vector<double> scale_;
  std::vector<double> sample_lo_, sample_hi_;  // (n_rows + 1) x k
  std::vector<double> logp_const_;             // n_rows + 1
  friend class TableBuilder;
};

template <class Rng>
Status WeightTable::sample(const double* key_values, Rng& rng, Sample* out) const {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  return sample_from_draws(
      key_values,
      [&](double* d) {
        *d = exploration_ == 1 ? normal(rng) : uniform(rng);
        return true;
      },
      out);
}

}  // namespace batchrl_mtf
