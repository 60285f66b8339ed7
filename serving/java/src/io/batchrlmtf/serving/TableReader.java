package io.batchrlmtf.serving;

import static io.batchrlmtf.serving.JsonValues.list;
import static io.batchrlmtf.serving.JsonValues.obj;
import static io.batchrlmtf.serving.JsonValues.show;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Validation of a {@code batchrl-mtf/weight-table@1} document (parsed by {@link StrictJson}) exactly
 * as the Python reference validates it, and the arrays a {@link WeightTable} serves from: the
 * grid of cells and their rows, the weights, the fusion's beta and the {@link Exploration} block.
 * Its {@link TableException}s name the field and row ({@link WeightTable#load} adds the source;
 * JSON syntax errors come from {@link StrictJson}).
 */
final class TableReader {
  final String[] tasks;
  final String[] weightNames;
  final boolean logsum;
  final double[] beta;
  final double[] betaRep; // beta repeated for one block of candidates (Fusion.logsum)
  final double[] low;
  final double[] high;
  final boolean hasBounds;
  final String[] keyNames;
  final double[][] edges;
  final int[] strides;
  final int[] cellRow;
  final double[][] weights; // rows, then the default as the last entry
  final int nRows;
  final Exploration exploration; // null: no exploration block

  /** Validates {@code doc} (messages name the field, not the source) and builds the arrays. */
  TableReader(Object doc) throws TableException {
    Map<String, Object> top = obj(doc, "table");
    Set<String> known = Set.of("format", "tasks", "fusion", "keys", "default", "rows",
        "action_bounds", "exploration", "meta");
    List<String> unknown = new ArrayList<>();
    for (String k : top.keySet()) {
      if (!known.contains(k)) {
        unknown.add(k);
      }
    }
    if (!unknown.isEmpty()) {
      unknown.sort(null);
      throw new TableException("table: unknown field(s) " + unknown);
    }
    if (!WeightTable.FORMAT.equals(top.get("format"))) {
      throw new TableException("format: expected '" + WeightTable.FORMAT + "', found " + show(top.get("format")));
    }
    for (String name : new String[] {"format", "tasks", "fusion", "keys", "default", "rows"}) {
      if (!top.containsKey(name)) {
        throw new TableException(name + ": missing required field");
      }
    }
    List<Object> tasksRaw = list(top.get("tasks"), "tasks");
    tasks = new String[tasksRaw.size()];
    for (int i = 0; i < tasks.length; i++) {
      Object t = tasksRaw.get(i);
      if (!(t instanceof String) || ((String) t).isEmpty()) {
        throw new TableException("tasks[" + i + "]: expected a non-empty string, found " + show(t));
      }
      tasks[i] = (String) t;
    }
    if (tasks.length == 0 || new HashSet<>(Arrays.asList(tasks)).size() != tasks.length) {
      throw new TableException("tasks: expected a non-empty list of unique names, found " + tasksRaw);
    }
    int k = tasks.length;
    weightNames = new String[k];
    for (int i = 0; i < k; i++) {
      weightNames[i] = "w_" + tasks[i];
    }

    Map<String, Object> fus = obj(top.get("fusion"), "fusion");
    Object formula = fus.get("formula");
    if (!"logsum".equals(formula) && !"sum".equals(formula)) {
      throw new TableException("fusion.formula: expected one of ('logsum', 'sum'), found " + show(formula));
    }
    for (String f : fus.keySet()) {
      if (!f.equals("formula") && !f.equals("beta")) {
        throw new TableException("fusion: unknown field(s) [" + f + "]");
      }
    }
    logsum = "logsum".equals(formula);
    if (!logsum) {
      if (fus.containsKey("beta") && fus.get("beta") != StrictJson.NULL) {
        throw new TableException("fusion.beta: expected no beta for formula 'sum'");
      }
      beta = null;
      betaRep = null;
    } else {
      if (!fus.containsKey("beta")) {
        throw new TableException("fusion.beta: missing (required for formula 'logsum')");
      }
      beta = perWeight(fus.get("beta"), tasks, "fusion.beta");
      for (int i = 0; i < k; i++) {
        if (!(beta[i] > 0)) {
          throw new TableException("fusion.beta." + tasks[i] + ": expected a number > 0, found " + beta[i]);
        }
      }
      betaRep = new double[Fusion.BLOCK * k];
      for (int j = 0; j < betaRep.length; j++) {
        betaRep[j] = beta[j % k];
      }
    }

    low = new double[k];
    high = new double[k];
    Object abRaw = top.get("action_bounds");
    hasBounds = abRaw != null && abRaw != StrictJson.NULL;
    if (hasBounds) {
      Map<String, Object> ab = obj(abRaw, "action_bounds");
      if (!ab.keySet().equals(new HashSet<>(Arrays.asList(weightNames)))) {
        throw new TableException("action_bounds: expected exactly the keys "
            + Arrays.toString(weightNames) + " (tasks match weights)");
      }
      for (int i = 0; i < k; i++) {
        String where = "action_bounds." + weightNames[i];
        List<Object> pair = list(ab.get(weightNames[i]), where);
        if (pair.size() != 2 || !(pair.get(0) instanceof StrictJson.Num)
            || !(pair.get(1) instanceof StrictJson.Num)) {
          throw new TableException(where + ": expected [low, high], found " + show(pair));
        }
        low[i] = ((StrictJson.Num) pair.get(0)).value;
        high[i] = ((StrictJson.Num) pair.get(1)).value;
        if (!(low[i] < high[i])) {
          throw new TableException(where + ": expected finite [low, high] with low < high, found "
              + show(pair));
        }
      }
    } else {
      Arrays.fill(low, Double.NEGATIVE_INFINITY);
      Arrays.fill(high, Double.POSITIVE_INFINITY);
    }

    List<Object> keysRaw = list(top.get("keys"), "keys");
    int d = keysRaw.size();
    keyNames = new String[d];
    edges = new double[d][];
    for (int j = 0; j < d; j++) {
      String where = "keys[" + j + "]";
      Map<String, Object> kd = obj(keysRaw.get(j), where);
      if (!kd.keySet().equals(Set.of("name", "edges"))) {
        throw new TableException(where + ": expected fields name and edges, found " + kd.keySet());
      }
      List<Object> e = list(kd.get("edges"), where + ".edges");
      edges[j] = new double[e.size()];
      for (int i = 0; i < e.size(); i++) {
        if (!(e.get(i) instanceof StrictJson.Num)) {
          throw new TableException(where + ".edges: expected finite numbers, found " + show(e.get(i)));
        }
        edges[j][i] = ((StrictJson.Num) e.get(i)).value;
      }
      if (!(kd.get("name") instanceof String)) {
        throw new TableException(where + ".name: expected a string, found " + show(kd.get("name")));
      }
      keyNames[j] = (String) kd.get("name");
    }
    Set<String> seen = new HashSet<>();
    long cells = 1;
    for (int j = 0; j < d; j++) {
      String n = keyNames[j];
      String where = "keys[" + j + "]";
      if (n.isEmpty()) {
        throw new TableException(where + ".name: expected a non-empty string, found ''");
      }
      if (n.startsWith("w_") || n.equals("support")) {
        throw new TableException(where + ".name: expected a state feature name (not 'w_*' or 'support'), found '" + n + "'");
      }
      if (!seen.add(n)) {
        throw new TableException(where + ".name: duplicate key '" + n + "'");
      }
      for (int i = 1; i < edges[j].length; i++) {
        if (!(edges[j][i] > edges[j][i - 1])) {
          throw new TableException(where + ".edges: expected strictly ascending edges, found "
              + edges[j][i - 1] + " then " + edges[j][i] + " at positions " + (i - 1) + ", " + i);
        }
      }
      cells *= edges[j].length + 1;
      if (cells > WeightTable.MAX_CELLS) {
        throw new TableException("keys: expected at most " + WeightTable.MAX_CELLS
            + " grid cells (product of len(edges)+1); use fewer keys or edges");
      }
    }

    double[] dflt = perWeight(top.get("default"), weightNames, "default");
    List<Object> rowsRaw = list(top.get("rows"), "rows");
    nRows = rowsRaw.size();
    weights = new double[nRows + 1][];
    weights[nRows] = dflt;
    int[][] loCell = new int[nRows][d];
    int[][] hiCell = new int[nRows][d];
    for (int r = 0; r < nRows; r++) { // structure of every row first (as the reference)
      String where = "rows[" + r + "]";
      Map<String, Object> rd = obj(rowsRaw.get(r), where);
      if (!(sameKeys(rd, "bounds", "weights", "support") || sameKeys(rd, "bounds", "weights"))) {
        throw new TableException(where + ": expected fields bounds, weights and (optional) support, found "
            + rd.keySet());
      }
      Map<String, Object> bd = obj(rd.get("bounds"), where + ".bounds");
      if (!sameKeys(bd, keyNames)) {
        throw new TableException(where + ".bounds: expected one bound per key " + Arrays.toString(keyNames)
            + ", found " + bd.keySet());
      }
      for (String name : keyNames) {
        List<Object> pair = list(bd.get(name), where + ".bounds." + name);
        if (pair.size() != 2 || !numOrNull(pair.get(0)) || !numOrNull(pair.get(1))) {
          throw new TableException(where + ".bounds." + name
              + ": expected [lo, hi] of numbers or null, found " + show(pair));
        }
      }
      weights[r] = perWeight(rd.get("weights"), weightNames, where + ".weights");
    }
    Object exRaw = top.get("exploration");
    String ex = null;
    double[] sc = null;
    if (exRaw != null && exRaw != StrictJson.NULL) {
      Map<String, Object> ed = obj(exRaw, "exploration");
      Object dist = ed.get("distribution");
      if (!"gaussian".equals(dist) && !"uniform".equals(dist)) {
        throw new TableException("exploration.distribution: expected 'gaussian' or 'uniform', found " + show(dist));
      }
      ex = (String) dist;
      String scaleName = ex.equals("gaussian") ? "sigma" : "halfwidth";
      if (!ed.keySet().equals(Set.of("distribution", scaleName))) {
        throw new TableException("exploration: expected fields distribution and " + scaleName
            + ", found " + ed.keySet());
      }
      sc = perWeight(ed.get(scaleName), weightNames, "exploration." + scaleName);
      for (int i = 0; i < k; i++) {
        if (!(sc[i] > 0)) {
          throw new TableException("exploration." + scaleName + "." + weightNames[i]
              + ": expected a number > 0, found " + sc[i]);
        }
      }
    }
    Object meta = top.containsKey("meta") ? top.get("meta") : null;
    if (meta != null) {
      obj(meta, "meta"); // free-form; strict JSON already checked depth and finiteness
    }

    // Values: the default, then every row in order: weights, support, bounds.
    checkWeights(dflt, "default");
    for (int r = 0; r < nRows; r++) {
      String where = "rows[" + r + "]";
      Map<String, Object> rd = obj(rowsRaw.get(r), where);
      checkWeights(weights[r], where + ".weights");
      if (rd.containsKey("support")) {
        Object s = rd.get("support");
        boolean ok = s instanceof StrictJson.Num && ((StrictJson.Num) s).integer;
        if (ok) {
          try {
            ok = Long.parseLong(((StrictJson.Num) s).text) >= 0;
          } catch (NumberFormatException e) {
            ok = false;
          }
        }
        if (!ok) {
          throw new TableException(where + ".support: expected an integer >= 0 (int64), found " + show(s));
        }
      }
      @SuppressWarnings("unchecked")
      Map<String, Object> bd = (Map<String, Object>) rd.get("bounds");
      for (int j = 0; j < d; j++) {
        @SuppressWarnings("unchecked")
        List<Object> pair = (List<Object>) bd.get(keyNames[j]);
        String w = where + ".bounds." + keyNames[j];
        loCell[r][j] = boundCell(j, pair.get(0), 0, "lo", w);
        hiCell[r][j] = boundCell(j, pair.get(1), edges[j].length + 1, "hi", w);
        if (loCell[r][j] >= hiCell[r][j]) {
          throw new TableException(w + ": expected lo < hi, found " + show(pair));
        }
      }
    }
    strides = new int[d];
    int stride = 1;
    for (int j = d - 1; j >= 0; j--) {
      strides[j] = stride;
      stride *= edges[j].length + 1;
    }
    cellRow = new int[(int) cells];
    Arrays.fill(cellRow, -1);
    for (int r = 0; r < nRows; r++) {
      int taken = paint(r, loCell[r], hiCell[r], 0, 0, false);
      if (taken >= 0) {
        throw new TableException("rows[" + r + "]: overlaps rows[" + taken + "] (rows never overlap)");
      }
      paint(r, loCell[r], hiCell[r], 0, 0, true);
    }

    // Exploration: per row (and default) the sampling box and the log-density constant.
    exploration = ex == null ? null : new Exploration(ex.equals("gaussian"), sc, weights, low, high);
  }

  /** Smallest row index already painted in the box (or -1); paints the box when {@code write}. */
  private int paint(int r, int[] lo, int[] hi, int j, int base, boolean write) {
    if (j == lo.length) {
      if (write) {
        cellRow[base] = r;
        return -1;
      }
      return cellRow[base];
    }
    int best = -1;
    for (int c = lo[j]; c < hi[j]; c++) {
      int got = paint(r, lo, hi, j + 1, base + c * strides[j], write);
      if (got >= 0 && (best < 0 || got < best)) {
        best = got;
      }
    }
    return best;
  }

  private int boundCell(int j, Object v, int noneCell, String side, String where) throws TableException {
    if (v == StrictJson.NULL) {
      return noneCell;
    }
    double x = ((StrictJson.Num) v).value;
    int pos = Arrays.binarySearch(edges[j], x);
    if (pos < 0 || edges[j][pos] != x) {
      throw new TableException(where + ": expected " + side + " to be null or one of the edges, found " + v);
    }
    while (pos > 0 && edges[j][pos - 1] == x) {
      pos--;
    }
    return pos + 1;
  }

  private void checkWeights(double[] w, String where) throws TableException {
    for (int t = 0; t < w.length; t++) {
      if (!(low[t] <= w[t] && w[t] <= high[t])) {
        throw new TableException(where + "." + weightNames[t] + ": expected a weight within the action bounds ["
            + low[t] + ", " + high[t] + "], found " + w[t]);
      }
    }
  }

  private static boolean numOrNull(Object x) {
    return x == StrictJson.NULL || x instanceof StrictJson.Num;
  }

  /** Whether map m has exactly the keys {@code names} (no set built: size, then lookups). */
  private static boolean sameKeys(Map<String, Object> m, String... names) {
    if (m.size() != names.length) {
      return false;
    }
    for (String n : names) {
      if (!m.containsKey(n)) {
        return false;
      }
    }
    return true;
  }

  private static double[] perWeight(Object x, String[] names, String where) throws TableException {
    Map<String, Object> m = obj(x, where);
    if (!sameKeys(m, names)) {
      throw new TableException(where + ": expected exactly the keys " + Arrays.toString(names)
          + " (tasks match weights), found " + show(m.keySet()));
    }
    double[] out = new double[names.length];
    for (int i = 0; i < names.length; i++) {
      Object v = m.get(names[i]);
      if (!(v instanceof StrictJson.Num)) {
        throw new TableException(where + "." + names[i] + ": expected a finite number, found " + show(v));
      }
      out[i] = ((StrictJson.Num) v).value;
    }
    return out;
  }
}
