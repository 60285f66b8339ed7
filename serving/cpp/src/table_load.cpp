// WeightTable::load and WeightTable::parse (batchrl_mtf/weight_table.hpp): validating a
// batchrl-mtf/weight-table@1 document as the Python reference does and building the table's arrays
// (the grid of cells, the weights, the sampling boxes). Reading the file is here too; JSON syntax
// errors come from parse_strict_json (strict_json.cpp).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "batchrl_mtf/strict_json.hpp"
#include "batchrl_mtf/weight_table.hpp"
#include "table_internal.hpp"

namespace batchrl_mtf {

using detail::kBlock;
using detail::num;
using nlohmann::json;

namespace {

std::string show(const json& v) {
  std::string s;
  try {
    s = v.dump();
  } catch (...) {
    s = "?";
  }
  return s.size() <= 60 ? s : s.substr(0, 57) + "...";
}

std::string kind(const json& v) {
  if (v.is_object()) return "object";
  if (v.is_array()) return "list";
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number()) return "number";
  return "null";
}

// A field's name for a message: a string, or a callable that makes it (built only on an error,
// so that validating a large table's rows allocates no strings).
inline std::string where_str(const std::string& s) { return s; }
inline std::string where_str(const char* s) { return s; }
template <class F>
std::string where_str(const F& f) {
  return f();
}

template <class W>
const json& obj(const json& v, const W& where) {
  if (!v.is_object()) throw TableError(where_str(where) + ": expected an object, found " + kind(v));
  return v;
}

template <class W>
const json& list(const json& v, const W& where) {
  if (!v.is_array()) throw TableError(where_str(where) + ": expected a list, found " + kind(v));
  return v;
}

std::set<std::string> keys_of(const json& o) {
  std::set<std::string> out;
  for (auto it = o.begin(); it != o.end(); ++it) out.insert(it.key());
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
  return s + "]";
}

/** Whether object o has exactly the keys of want (no set built: size, then lookups). */
bool same_keys(const json& o, const std::vector<std::string>& want) {
  if (o.size() != want.size()) return false;
  for (const auto& k : want)
    if (!o.contains(k)) return false;
  return true;
}

template <class W>
std::vector<double> per_weight(const json& x, const std::vector<std::string>& names, const W& where_) {
  const json& m = obj(x, where_);
  std::vector<double> out;
  out.reserve(names.size());
  bool same = m.size() == names.size();
  for (std::size_t i = 0; same && i < names.size(); ++i) {  // one lookup per name
    auto it = m.find(names[i]);
    if (it == m.end()) {
      same = false;
    } else {
      out.push_back(it->is_number() ? it->get<double>() : NAN);
    }
  }
  if (!same)
    throw TableError(where_str(where_) + ": expected exactly the keys " + join(names) + " (tasks match weights), found " + show(m));
  for (std::size_t i = 0; i < names.size(); ++i)
    if (std::isnan(out[i]))
      throw TableError(where_str(where_) + "." + names[i] + ": expected a finite number, found " + show(m.at(names[i])));
  return out;
}

}  // namespace

class TableBuilder {
 public:
  static WeightTable build(const json& doc);
};

WeightTable WeightTable::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TableError(path + ": cannot read weight table (cannot open the file)");
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0) throw TableError(path + ": cannot read weight table (not a regular file)");
  if (static_cast<std::size_t>(size) > kMaxJsonBytes)
    throw TableError(path + ": expected at most " + std::to_string(kMaxJsonBytes) + " bytes of JSON, found " +
                     std::to_string(size));
  in.seekg(0);
  std::string text(static_cast<std::size_t>(size), '\0');
  in.read(&text[0], size);
  if (!in) throw TableError(path + ": cannot read weight table (read error)");
  return parse(text, path);
}

WeightTable WeightTable::parse(const std::string& text, const std::string& source) {
  try {
    return TableBuilder::build(parse_strict_json(text));
  } catch (const TableError& e) {
    throw TableError(source + ": " + e.what());
  }
}

namespace {
void paint(std::vector<std::int32_t>& grid, const std::vector<std::int64_t>& strides, const std::vector<int>& lo,
           const std::vector<int>& hi, std::size_t j, std::int64_t base, int row, bool write, int* best) {
  if (j == lo.size()) {
    if (write) grid[base] = row;
    else if (grid[base] >= 0 && (*best < 0 || grid[base] < *best)) *best = grid[base];
    return;
  }
  for (int c = lo[j]; c < hi[j]; ++c) paint(grid, strides, lo, hi, j + 1, base + c * strides[j], row, write, best);
}
}  // namespace

WeightTable TableBuilder::build(const json& doc) {
  WeightTable t;
  const json& top = obj(doc, "table");
  static const std::set<std::string> known = {"format", "tasks", "fusion", "keys", "default", "rows",
                                              "action_bounds", "exploration", "meta"};
  std::vector<std::string> unknown;
  for (const auto& k : keys_of(top))
    if (!known.count(k)) unknown.push_back(k);
  if (!unknown.empty()) throw TableError("table: unknown field(s) " + join(unknown));
  if (!top.contains("format") || top["format"] != WeightTable::kFormat)
    throw TableError(std::string("format: expected '") + WeightTable::kFormat + "', found " +
                     (top.contains("format") ? show(top["format"]) : "None"));
  for (const char* name : {"format", "tasks", "fusion", "keys", "default", "rows"})
    if (!top.contains(name)) throw TableError(std::string(name) + ": missing required field");
  const json& tasks = list(top["tasks"], "tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    if (!tasks[i].is_string() || tasks[i].get<std::string>().empty())
      throw TableError("tasks[" + std::to_string(i) + "]: expected a non-empty string, found " + show(tasks[i]));
    t.tasks_.push_back(tasks[i].get<std::string>());
  }
  if (t.tasks_.empty() || std::set<std::string>(t.tasks_.begin(), t.tasks_.end()).size() != t.tasks_.size())
    throw TableError("tasks: expected a non-empty list of unique names, found " + show(tasks));
  const std::size_t k = t.tasks_.size();
  std::vector<std::string> wn;
  for (const auto& s : t.tasks_) wn.push_back("w_" + s);

  const json& fus = obj(top["fusion"], "fusion");
  json formula = fus.contains("formula") ? fus["formula"] : json(nullptr);
  if (formula != "logsum" && formula != "sum")
    throw TableError("fusion.formula: expected one of ('logsum', 'sum'), found " + show(formula));
  for (const auto& f : keys_of(fus))
    if (f != "formula" && f != "beta") throw TableError("fusion: unknown field(s) ['" + f + "']");
  t.logsum_ = formula == "logsum";
  if (!t.logsum_) {
    if (fus.contains("beta") && !fus["beta"].is_null()) throw TableError("fusion.beta: expected no beta for formula 'sum'");
  } else {
    if (!fus.contains("beta")) throw TableError("fusion.beta: missing (required for formula 'logsum')");
    t.beta_ = per_weight(fus["beta"], t.tasks_, "fusion.beta");
    for (std::size_t i = 0; i < k; ++i)
      if (!(t.beta_[i] > 0)) throw TableError("fusion.beta." + t.tasks_[i] + ": expected a number > 0, found " + num(t.beta_[i]));
    t.beta_rep_.resize(kBlock * k);
    for (std::size_t j = 0; j < kBlock * k; ++j) t.beta_rep_[j] = t.beta_[j % k];
  }

  t.low_.assign(k, -INFINITY);
  t.high_.assign(k, INFINITY);
  if (top.contains("action_bounds") && !top["action_bounds"].is_null()) {
    const json& ab = obj(top["action_bounds"], "action_bounds");
    if (keys_of(ab) != std::set<std::string>(wn.begin(), wn.end()))
      throw TableError("action_bounds: expected exactly the keys " + join(wn) + " (tasks match weights)");
    for (std::size_t i = 0; i < k; ++i) {
      std::string where = "action_bounds." + wn[i];
      const json& pair = list(ab[wn[i]], where);
      if (pair.size() != 2 || !pair[0].is_number() || !pair[1].is_number())
        throw TableError(where + ": expected [low, high], found " + show(pair));
      t.low_[i] = pair[0].get<double>();
      t.high_[i] = pair[1].get<double>();
      if (!(t.low_[i] < t.high_[i]))
        throw TableError(where + ": expected finite [low, high] with low < high, found " + show(pair));
    }
  }

  const json& keys = list(top["keys"], "keys");
  for (std::size_t j = 0; j < keys.size(); ++j) {
    std::string where = "keys[" + std::to_string(j) + "]";
    const json& kd = obj(keys[j], where);
    if (keys_of(kd) != std::set<std::string>{"name", "edges"})
      throw TableError(where + ": expected fields name and edges, found " + show(kd));
    const json& e = list(kd["edges"], where + ".edges");
    std::vector<double> edges;
    for (const auto& v : e) {
      if (!v.is_number()) throw TableError(where + ".edges: expected finite numbers, found " + show(v));
      edges.push_back(v.get<double>());
    }
    if (!kd["name"].is_string()) throw TableError(where + ".name: expected a string, found " + show(kd["name"]));
    t.key_names_.push_back(kd["name"].get<std::string>());
    t.edges_.push_back(std::move(edges));
  }
  const std::size_t d = t.key_names_.size();
  std::set<std::string> seen;
  long cells = 1;
  for (std::size_t j = 0; j < d; ++j) {
    const std::string& n = t.key_names_[j];
    std::string where = "keys[" + std::to_string(j) + "]";
    if (n.empty()) throw TableError(where + ".name: expected a non-empty string, found ''");
    if (n.rfind("w_", 0) == 0 || n == "support")
      throw TableError(where + ".name: expected a state feature name (not 'w_*' or 'support'), found '" + n + "'");
    if (!seen.insert(n).second) throw TableError(where + ".name: duplicate key '" + n + "'");
    const auto& e = t.edges_[j];
    for (std::size_t i = 1; i < e.size(); ++i)
      if (!(e[i] > e[i - 1]))
        throw TableError(where + ".edges: expected strictly ascending edges, found " + num(e[i - 1]) + " then " +
                         num(e[i]) + " at positions " + std::to_string(i - 1) + ", " + std::to_string(i));
    cells *= static_cast<long>(e.size() + 1);
    if (cells > WeightTable::kMaxCells)
      throw TableError("keys: expected at most " + std::to_string(WeightTable::kMaxCells) +
                       " grid cells (product of len(edges)+1); use fewer keys or edges");
  }

  std::vector<double> dflt = per_weight(top["default"], wn, "default");
  const json& rows = list(top["rows"], "rows");
  const std::size_t nr = rows.size();
  t.n_rows_ = nr;
  t.weights_.assign((nr + 1) * k, 0.0);
  std::copy(dflt.begin(), dflt.end(), t.weights_.begin() + nr * k);
  static const std::vector<std::string> f3 = {"bounds", "weights", "support"}, f2 = {"bounds", "weights"};
  for (std::size_t r = 0; r < nr; ++r) {
    auto where = [r] { return "rows[" + std::to_string(r) + "]"; };
    const json& rd = obj(rows[r], where);
    if (!same_keys(rd, f3) && !same_keys(rd, f2))
      throw TableError(where() + ": expected fields bounds, weights and (optional) support, found " + show(rd));
    const json& bd = obj(rd["bounds"], [&] { return where() + ".bounds"; });
    if (!same_keys(bd, t.key_names_))
      throw TableError(where() + ".bounds: expected one bound per key " + join(t.key_names_) + ", found " + show(bd));
    for (const auto& name : t.key_names_) {
      const json& pair = list(bd[name], [&] { return where() + ".bounds." + name; });
      auto ok = [](const json& v) { return v.is_null() || v.is_number(); };
      if (pair.size() != 2 || !ok(pair[0]) || !ok(pair[1]))
        throw TableError(where() + ".bounds." + name + ": expected [lo, hi] of numbers or null, found " + show(pair));
    }
    auto w = per_weight(rd["weights"], wn, [&] { return where() + ".weights"; });
    std::copy(w.begin(), w.end(), t.weights_.begin() + r * k);
  }
  if (top.contains("exploration") && !top["exploration"].is_null()) {
    const json& ed = obj(top["exploration"], "exploration");
    json dist = ed.contains("distribution") ? ed["distribution"] : json(nullptr);
    if (dist != "gaussian" && dist != "uniform")
      throw TableError("exploration.distribution: expected 'gaussian' or 'uniform', found " + show(dist));
    t.exploration_ = dist == "gaussian" ? 1 : 2;
    std::string scale_name = t.exploration_ == 1 ? "sigma" : "halfwidth";
    if (keys_of(ed) != std::set<std::string>{"distribution", scale_name})
      throw TableError("exploration: expected fields distribution and " + scale_name + ", found " + show(ed));
    t.scale_ = per_weight(ed[scale_name], wn, "exploration." + scale_name);
    for (std::size_t i = 0; i < k; ++i)
      if (!(t.scale_[i] > 0))
        throw TableError("exploration." + scale_name + "." + wn[i] + ": expected a number > 0, found " + num(t.scale_[i]));
  }
  if (top.contains("meta")) obj(top["meta"], "meta");

  auto check_weights = [&](const double* w, const auto& where) {
    for (std::size_t i = 0; i < k; ++i)
      if (!(t.low_[i] <= w[i] && w[i] <= t.high_[i]))
        throw TableError(where_str(where) + "." + wn[i] + ": expected a weight within the action bounds [" +
                         num(t.low_[i]) + ", " + num(t.high_[i]) + "], found " + num(w[i]));
  };
  check_weights(dflt.data(), "default");
  t.strides_.assign(d, 1);
  for (std::size_t j = d; j-- > 1;) t.strides_[j - 1] = t.strides_[j] * static_cast<std::int64_t>(t.edges_[j].size() + 1);
  t.cell_row_.assign(static_cast<std::size_t>(cells), -1);
  std::vector<int> lo(d), hi(d);
  for (std::size_t r = 0; r < nr; ++r) {
    auto where = [r] { return "rows[" + std::to_string(r) + "]"; };
    const json& rd = rows[r];
    check_weights(&t.weights_[r * k], [&] { return where() + ".weights"; });
    if (rd.contains("support")) {
      const json& s = rd["support"];
      if (!((s.is_number_integer() && !s.is_number_unsigned() && s.get<std::int64_t>() >= 0) ||
            (s.is_number_unsigned() && s.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX))))
        throw TableError(where() + ".support: expected an integer >= 0 (int64), found " + show(s));
    }
    for (std::size_t j = 0; j < d; ++j) {
      auto w = [&] { return where() + ".bounds." + t.key_names_[j]; };
      const json& pair = rd["bounds"][t.key_names_[j]];
      const auto& e = t.edges_[j];
      auto cell = [&](const json& v, int none_cell, const char* side) {
        if (v.is_null()) return none_cell;
        double x = v.get<double>();
        auto it = std::lower_bound(e.begin(), e.end(), x);
        if (it == e.end() || *it != x)
          throw TableError(w() + ": expected " + side + " to be null or one of the edges, found " + show(v));
        return static_cast<int>(it - e.begin()) + 1;
      };
      lo[j] = cell(pair[0], 0, "lo");
      hi[j] = cell(pair[1], static_cast<int>(e.size()) + 1, "hi");
      if (lo[j] >= hi[j]) throw TableError(w() + ": expected lo < hi, found " + show(pair));
    }
    int best = -1;
    paint(t.cell_row_, t.strides_, lo, hi, 0, 0, static_cast<int>(r), false, &best);
    if (best >= 0)
      throw TableError(where() + ": overlaps rows[" + std::to_string(best) + "] (rows never overlap)");
    paint(t.cell_row_, t.strides_, lo, hi, 0, 0, static_cast<int>(r), true, &best);
  }

  const double log_sqrt_2pi = 0.5 * std::log(2.0 * M_PI);
  t.sample_lo_.assign((nr + 1) * k, 0.0);
  t.sample_hi_.assign((nr + 1) * k, 0.0);
  t.logp_const_.assign(nr + 1, 0.0);
  for (std::size_t r = 0; r <= nr; ++r) {
    double c = 0;
    for (std::size_t i = 0; i < k; ++i) {
      double mu = t.weights_[r * k + i], lo_v = t.low_[i], hi_v = t.high_[i];
      if (t.exploration_ == 2) {
        lo_v = std::max(mu - t.scale_[i], t.low_[i]);
        hi_v = std::min(mu + t.scale_[i], t.high_[i]);
        c -= std::log(hi_v - lo_v);
      } else if (t.exploration_ == 1) {
        double a = (t.low_[i] - mu) / t.scale_[i], b = (t.high_[i] - mu) / t.scale_[i];
        double z = 0.5 * (std::erf(b / std::sqrt(2.0)) + std::erf(-a / std::sqrt(2.0)));
        c -= std::log(t.scale_[i]) + log_sqrt_2pi + std::log(z);
      }
      t.sample_lo_[r * k + i] = lo_v;
      t.sample_hi_[r * k + i] = hi_v;
    }
    t.logp_const_[r] = c;
  }
  return t;
}

}  // namespace batchrl_mtf
