// Implementation of batchrl_mtf/weight_table.hpp and strict_json.hpp (C++17, nlohmann/json).
#include "batchrl_mtf/weight_table.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "batchrl_mtf/strict_json.hpp"

#if defined(__x86_64__) && defined(__GLIBC__) && !defined(BATCHRL_MTF_NO_MVEC)
#include <immintrin.h>
// glibc's vector math library (libmvec): log of 4 doubles (AVX2) or 8 (AVX-512), within 4 ulp.
extern "C" __m256d _ZGVdN4v_log(__m256d);
extern "C" __m512d _ZGVeN8v_log(__m512d);
#define BATCHRL_MTF_MVEC 1
#endif

namespace batchrl_mtf {

using nlohmann::json;

namespace {

/** Candidates per block of fuse_logsum: its k * kBlock values stay in the L1 cache. */
constexpr std::size_t kBlock = 256;

/**
 * One pass over the text: whether it is UTF-8 (no overlong forms, surrogates, code points above
 * U+10FFFF or truncated sequences) and whether brackets outside strings nest deeper than
 * kMaxJsonDepth; a UTF-8 error anywhere is reported before a nesting error.
 */
void check_text(const char* data, std::size_t n) {
  // Bytes that need a look: quotes, backslash, brackets and every non-ASCII byte; runs of other
  // bytes (digits, names, punctuation: most of a table) are skipped with one table lookup each.
  static const auto special = [] {
    std::array<bool, 256> t{};
    for (unsigned char c : std::string("\"\\[]{}")) t[c] = true;
    for (int c = 0x80; c < 256; ++c) t[c] = true;
    return t;
  }();
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  std::size_t i = 0;
  int depth = 0;
  bool in_string = false, too_deep = false, utf8 = true;
  while (i < n) {
    while (i < n && !special[p[i]]) ++i;
    if (i == n) break;
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      if (in_string) {
        if (c == '\\' && i < n && p[i] < 0x80) ++i;  // skip an escaped ASCII byte (others: checked)
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        too_deep |= ++depth > kMaxJsonDepth;
      } else if (c == ']' || c == '}') {
        --depth;
      }
      continue;
    }
    std::size_t len;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else { utf8 = false; break; }
    if (i + len > n) { utf8 = false; break; }
    for (std::size_t j = 1; j < len; ++j) {
      if ((p[i + j] & 0xC0) != 0x80) { utf8 = false; break; }
      cp = (cp << 6) | (p[i + j] & 0x3F);
    }
    if (!utf8) break;
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      utf8 = false;
      break;
    }
    i += len;
  }
  if (!utf8) throw TableError("not UTF-8 text (JSON files are UTF-8, re-save it as UTF-8)");
  if (too_deep) throw TableError("not valid JSON (nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels)");
}

/** SAX handler building a DOM, refusing duplicate keys, long and overflowing numbers. */
class StrictSax : public nlohmann::json_sax<json> {
 public:
  json root;
  std::string error;

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t& s) override {
    if (s.size() > kMaxNumberChars) {
      error = "a number of " + std::to_string(s.size()) + " characters (at most 100)";
      return false;
    }
    if (!std::isfinite(v)) {
      error = "number " + s.substr(0, 30) + " overflows a double";
      return false;
    }
    return put(json(v));
  }
  bool string(string_t& v) override { return put(json(v)); }
  bool binary(binary_t&) override { error = "binary values"; return false; }
  bool start_object(std::size_t) override {
    if (!put(json::object())) return false;
    stack_.push_back(last_);
    return true;
  }
  bool key(string_t& k) override {
    // One lookup: insert a null under the key (refusing a duplicate); put() fills it.
    auto& o = stack_.back()->get_ref<json::object_t&>();
    auto res = o.emplace(std::move(k), nullptr);
    if (!res.second) {
      error = "duplicate key '" + res.first->first.substr(0, 40) + "' in an object";
      return false;
    }
    slot_ = &res.first->second;
    return true;
  }
  bool end_object() override { stack_.pop_back(); return true; }
  bool start_array(std::size_t) override {
    if (!put(json::array())) return false;
    stack_.push_back(last_);
    return true;
  }
  bool end_array() override { stack_.pop_back(); return true; }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
    std::string what = ex.what();
    auto at = what.find("] ");
    error = (at == std::string::npos ? what : what.substr(at + 2)) + " (byte " + std::to_string(pos) + ")";
    return false;
  }

 private:
  std::vector<json*> stack_;
  json* last_ = nullptr;
  json* slot_ = nullptr;  // the value of the object's latest key
  bool put(json&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      last_ = &root;
    } else if (stack_.back()->is_object()) {
      *slot_ = std::move(v);
      last_ = slot_;
    } else {
      stack_.back()->push_back(std::move(v));
      last_ = &stack_.back()->back();
    }
    return true;
  }
};

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

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

json parse_strict_json(const std::string& input) {
  if (input.size() > kMaxJsonBytes)
    throw TableError("expected at most " + std::to_string(kMaxJsonBytes) + " bytes of JSON, found " +
                     std::to_string(input.size()));
  const std::size_t skip = input.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // a UTF-8 BOM
  const char* begin = input.data() + skip;
  const char* end = input.data() + input.size();
  check_text(begin, static_cast<std::size_t>(end - begin));
  StrictSax sax;
  bool ok = json::sax_parse(begin, end, &sax, json::input_format_t::json, true, false);
  if (!ok) throw TableError("not valid JSON (" + (sax.error.empty() ? std::string("syntax error") : sax.error) + ")");
  return std::move(sax.root);
}

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

// ---------------------------------------------------------------------------------------- serving

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

Status WeightTable::score(const double* key_values, const double* preds, std::size_t n, double* scores,
                          int* order) const noexcept {
  Status st = fuse(preds, n, lookup(key_values), scores);
  if (st.ok) rank(scores, n, order);
  return st;
}

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
