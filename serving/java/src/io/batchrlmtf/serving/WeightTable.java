package io.batchrlmtf.serving;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.DoubleSupplier;
import java.util.random.RandomGenerator;

/**
 * A validated weight table ({@code batchrl-mtf/weight-table@1}, see docs/weight-table.md).
 *
 * <p>{@link #load} validates everything the Python reference validates and throws a {@link
 * TableException} whose message names the field and row. After loading, a table is immutable:
 * every method may be called from any number of threads at once.
 */
public final class WeightTable {
  public static final String FORMAT = "batchrl-mtf/weight-table@1";
  public static final int MAX_CELLS = 1 << 22;
  private static final double LOG_SQRT_2PI = 0.5 * Math.log(2.0 * Math.PI);
  private static final long MAX_SUPPORT = Long.MAX_VALUE;

  private final String[] tasks;
  private final String[] weightNames;
  private final boolean logsum;
  private final double[] beta;
  private final double[] betaRep; // beta repeated for one block of candidates (fuseLogsum)
  private final double[] low;
  private final double[] high;
  private final boolean hasBounds;
  private final String[] keyNames;
  private final double[][] edges;
  private final int[] strides;
  private final int[] cellRow;
  private final double[][] weights; // rows, then the default as the last entry
  private final int nRows;
  private final String exploration; // null, "gaussian" or "uniform"
  private final double[] scale;
  private final double[][] sampleLo;
  private final double[][] sampleHi;
  private final double[] logpConst;

  /** Weights and their log-density: the result of {@link #sample}. */
  public static final class Sample {
    public final double[] weights;
    public final double behaviorLogp;

    Sample(double[] weights, double behaviorLogp) {
      this.weights = weights;
      this.behaviorLogp = behaviorLogp;
    }
  }

  // ------------------------------------------------------------------------------------ loading

  /** Reads and validates a table file. Messages start with the path. */
  public static WeightTable load(Path path) throws TableException {
    byte[] data;
    try {
      long size = Files.size(path);
      if (size > StrictJson.MAX_BYTES) {
        throw new TableException(path + ": expected at most " + StrictJson.MAX_BYTES
            + " bytes of JSON, found " + size);
      }
      data = Files.readAllBytes(path);
    } catch (IOException e) {
      throw new TableException(path + ": cannot read weight table (" + e.getMessage() + ")");
    }
    return parse(data, path.toString());
  }

  /** Reads and validates a table from a stream of UTF-8 bytes. */
  public static WeightTable load(InputStream in, String source) throws TableException {
    try {
      return parse(in.readAllBytes(), source);
    } catch (IOException e) {
      throw new TableException(source + ": cannot read weight table (" + e.getMessage() + ")");
    }
  }

  /** Reads and validates a table from characters (already decoded); messages start with source. */
  public static WeightTable load(Reader reader, String source) throws TableException {
    StringBuilder sb = new StringBuilder();
    char[] buf = new char[1 << 16];
    try {
      for (int r; (r = reader.read(buf)) >= 0; ) {
        sb.append(buf, 0, r);
        if (sb.length() > StrictJson.MAX_BYTES) {
          throw new TableException(source + ": expected at most " + StrictJson.MAX_BYTES + " bytes of JSON");
        }
      }
    } catch (IOException e) {
      throw new TableException(source + ": cannot read weight table (" + e.getMessage() + ")");
    }
    try {
      return new WeightTable(StrictJson.parse(sb.toString()));
    } catch (TableException e) {
      throw new TableException(source + ": " + e.getMessage());
    }
  }

  /** Parses and validates UTF-8 JSON bytes; messages start with {@code source}. */
  public static WeightTable parse(byte[] data, String source) throws TableException {
    try {
      return new WeightTable(StrictJson.parse(data));
    } catch (TableException e) {
      throw new TableException(source + ": " + e.getMessage());
    }
  }

  private WeightTable(Object doc) throws TableException {
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
    if (!FORMAT.equals(top.get("format"))) {
      throw new TableException("format: expected '" + FORMAT + "', found " + show(top.get("format")));
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
      betaRep = new double[BLOCK * k];
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
      if (cells > MAX_CELLS) {
        throw new TableException("keys: expected at most " + MAX_CELLS
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
    exploration = ex;
    scale = sc;
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
    sampleLo = new double[nRows + 1][k];
    sampleHi = new double[nRows + 1][k];
    logpConst = new double[nRows + 1];
    for (int r = 0; r <= nRows; r++) {
      double c = 0;
      for (int t = 0; t < k; t++) {
        double mu = weights[r][t];
        double lo = low[t];
        double hi = high[t];
        if ("uniform".equals(exploration)) {
          lo = Math.max(mu - scale[t], low[t]);
          hi = Math.min(mu + scale[t], high[t]);
          c -= Math.log(hi - lo);
        } else if ("gaussian".equals(exploration)) {
          double a = (low[t] - mu) / scale[t];
          double b = (high[t] - mu) / scale[t];
          double z = 0.5 * (Erf.erf(b / Math.sqrt(2.0)) + Erf.erf(-a / Math.sqrt(2.0)));
          c -= Math.log(scale[t]) + LOG_SQRT_2PI + Math.log(z);
        }
        sampleLo[r][t] = lo;
        sampleHi[r][t] = hi;
      }
      logpConst[r] = c;
    }
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

  // ------------------------------------------------------------------------------------ serving

  public String[] tasks() {
    return tasks.clone();
  }

  public String[] keyNames() {
    return keyNames.clone();
  }

  public boolean logsum() {
    return logsum;
  }

  public boolean hasExploration() {
    return exploration != null;
  }

  /** Row index for key values in {@link #keyNames} order (NaN = missing); -1 for the default. */
  public int rowIndex(double[] keyValues) {
    int cell = 0;
    for (int j = 0; j < edges.length; j++) {
      double x = keyValues[j];
      if (Double.isNaN(x)) {
        return -1;
      }
      cell += upperBound(edges[j], x) * strides[j];
    }
    return cellRow[cell];
  }

  /** The weights (task order) for key values in {@link #keyNames} order; do not modify them. */
  public double[] lookup(double[] keyValues) {
    int r = rowIndex(keyValues);
    return weights[r < 0 ? nRows : r];
  }

  /** Weights for a state given as feature name to value (every key must be present). */
  public double[] lookup(Map<String, Double> features) {
    return lookup(keyValues(features));
  }

  /** Key values in {@link #keyNames} order from a map; a missing key is an error. */
  public double[] keyValues(Map<String, Double> features) {
    double[] x = new double[keyNames.length];
    for (int j = 0; j < x.length; j++) {
      Double v = features.get(keyNames[j]);
      if (v == null && !features.containsKey(keyNames[j])) {
        throw new IllegalArgumentException("features: missing key feature '" + keyNames[j] + "'");
      }
      x[j] = v == null ? Double.NaN : v;
    }
    return x;
  }

  private static int upperBound(double[] e, double x) {
    int lo = 0;
    int hi = e.length;
    while (lo < hi) {
      int mid = (lo + hi) >>> 1;
      if (e[mid] <= x) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  /**
   * Scores of n candidates: {@code preds} is row-major (n, k) in task order. A NaN prediction makes
   * the score NaN (ranked last).
   *
   * @throws IllegalArgumentException a prediction outside [0, 1] (logsum) or infinite (sum), or
   *     shapes that do not fit; the message names candidate and task.
   */
  public double[] fuse(double[] preds, int n, double[] w) {
    int k = tasks.length;
    if (preds.length != n * k || w.length != k) {
      throw new IllegalArgumentException("fuse: expected preds of length n*k = " + (n * k)
          + " and " + k + " weights, found " + preds.length + " and " + w.length);
    }
    double[] out = new double[n];
    fuseInto(preds, n, w, out);
    return out;
  }

  /** Scores of {@code preds.length} candidates, {@code preds[i]} in task order (see {@link #fuse}). */
  public double[] fuse(double[][] preds, double[] w) {
    int k = tasks.length;
    double[] flat = new double[preds.length * k];
    for (int i = 0; i < preds.length; i++) {
      if (preds[i].length != k) {
        throw new IllegalArgumentException("fuse: expected " + k + " predictions for candidate " + i
            + ", found " + preds[i].length);
      }
      System.arraycopy(preds[i], 0, flat, i * k, k);
    }
    return fuse(flat, preds.length, w);
  }

  /**
   * As {@link #fuse}, writing into {@code out} (length >= n): no allocation on the hot path (a
   * thread's scratch block is allocated on its first call).
   */
  public void fuseInto(double[] preds, int n, double[] w, double[] out) {
    int k = tasks.length;
    if (n < 0 || preds.length < n * k || w.length != k || out.length < n) {
      throw new IllegalArgumentException("fuse: expected preds of length >= n*k = " + (n * k) + ", "
          + k + " weights and out of length >= " + n + ", found " + preds.length + ", " + w.length
          + " and " + out.length);
    }
    if (logsum) {
      fuseLogsum(preds, n, w, out);
      return;
    }
    for (int i = 0; i < n; i++) {
      double s = 0;
      boolean nan = false;
      int off = i * k;
      for (int t = 0; t < k; t++) {
        double p = preds[off + t];
        if (Double.isNaN(p)) {
          nan = true;
          continue;
        }
        if (Double.isInfinite(p)) {
          throw new IllegalArgumentException("preds." + tasks[t] + "[" + i
              + "]: expected a finite number or null, found " + p);
        }
        s += w[t] * p;
      }
      if (!nan && Double.isInfinite(s)) {
        throw new IllegalArgumentException("fuse: a score overflows a double");
      }
      out[i] = nan ? Double.NaN : s;
    }
  }

  /** Candidates per block of {@link #fuseLogsum}: its k * BLOCK values stay in the L1 cache. */
  private static final int BLOCK = 256;
  /** Bits of 1.0: a double in [+0.0, 1.0] has bits b <= ONE_BITS (as a signed long too). */
  private static final long ONE_BITS = 0x3FF0000000000000L;
  private static final ThreadLocal<double[][]> FUSE_SCRATCH = new ThreadLocal<>();

  /**
   * Block by block: x = p + beta with a branch-free range check (the sign bit of (ONE_BITS - b) | b
   * is set for any value outside [+0.0, 1.0], NaN and -0.0 included, so that a second look is
   * needed only then), the block's logarithms ({@link BlockLog}: vectorised, within 2 ulp), then
   * the weighted sums in task order.
   */
  private void fuseLogsum(double[] preds, int n, double[] w, double[] out) {
    int k = tasks.length;
    double[][] scratch = FUSE_SCRATCH.get();
    if (scratch == null || scratch[0].length < BLOCK * k) {
      scratch = new double[][] {new double[BLOCK * k], new double[BLOCK * k]};
      FUSE_SCRATCH.set(scratch);
    }
    double[] x = scratch[0];
    double[] betaRep = this.betaRep;
    boolean anyNan = false;
    for (int b0 = 0; b0 < n; b0 += BLOCK) {
      int nb = Math.min(BLOCK, n - b0);
      int m = nb * k;
      int base = b0 * k;
      long bad = 0;
      for (int j = 0; j < m; j++) {
        double p = preds[base + j];
        long b = Double.doubleToRawLongBits(p);
        bad |= (ONE_BITS - b) | b;
        x[j] = p + betaRep[j];
      }
      if (bad < 0) {
        for (int j = 0; j < m; j++) {
          double p = preds[base + j];
          if (p >= 0.0 && p <= 1.0) {
            continue;
          }
          if (Double.isNaN(p)) {
            anyNan = true;
            continue;
          }
          throw new IllegalArgumentException("preds." + tasks[j % k] + "[" + (b0 + j / k)
              + "]: expected a probability in [0, 1] or null, found " + p);
        }
      }
      BlockLog.logInPlace(x, m, scratch[1]);
      for (int i = 0; i < nb; i++) {
        double s = 0;
        int off = i * k;
        for (int t = 0; t < k; t++) {
          s += w[t] * x[off + t];
        }
        out[b0 + i] = s;
      }
    }
    if (anyNan) {
      for (int i = 0; i < n; i++) {
        for (int t = 0; t < k; t++) {
          if (Double.isNaN(preds[i * k + t])) {
            out[i] = Double.NaN;
          }
        }
      }
    }
    for (int i = 0; i < n; i++) {
      if (Double.isInfinite(out[i])) {
        throw new IllegalArgumentException("fuse: a score overflows a double");
      }
    }
  }

  /** Candidate indices from the best score to the worst; ties by index; NaN last. */
  public static int[] rank(double[] scores, int n) {
    int[] order = new int[n];
    rankInto(scores, n, order, new long[2 * n], new int[n]);
    return order;
  }

  private static final ThreadLocal<int[]> RANK_COUNT = ThreadLocal.withInitial(() -> new int[2048]);

  /**
   * As {@link #rank} into {@code order} (length >= n) with caller-owned scratch arrays ({@code
   * keys} length >= 2n, {@code tmp} length >= n): no allocation on the hot path. Keys that order
   * the scores best first as signed longs (NaN last; 0.0 ties with -0.0), then a stable radix sort
   * of the indices by key (see {@link #radixSort}): exactly a sort on (score, index).
   */
  public static void rankInto(double[] scores, int n, int[] order, long[] keys, int[] tmp) {
    if (n == 0) {
      return;
    }
    for (int i = 0; i < n; i++) {
      double d = scores[i] + 0.0; // -0.0 + 0.0 = +0.0: ties with 0.0
      long b = Double.doubleToRawLongBits(d);
      long asc = b ^ ((b >> 63) | Long.MIN_VALUE); // unsigned ascending order of d
      long key = ~asc ^ Long.MIN_VALUE; // best first, as a signed long
      keys[i] = d != d ? Long.MAX_VALUE : key; // NaN last
      order[i] = i;
    }
    radixSort(keys, order, 0, n, tmp, RANK_COUNT.get());
  }

  /**
   * Stable sort of idx[from, from + m) by keys[idx] (ascending; equal keys keep their order). One
   * counting pass on (key - min) >>> shift, the shift leaving at most 2^11 buckets (about m), puts
   * every index into its bucket; a bucket of more than 16 is sorted again the same way (on its own
   * range, at least 6 bits narrower: at most 11 levels), and one insertion sort over the range then
   * sorts the short buckets (it never moves an index past its bucket: O(m * 16) at most).
   */
  private static void radixSort(long[] keys, int[] idx, int from, int m, int[] tmp, int[] count) {
    int to = from + m;
    if (m > 16) {
      long lo = keys[idx[from]];
      long hi = lo;
      for (int i = from + 1; i < to; i++) {
        long key = keys[idx[i]];
        lo = Math.min(lo, key);
        hi = Math.max(hi, key);
      }
      if (lo == hi) {
        return; // all equal: already in order
      }
      int bits = 4; // about log2(m) digit bits, 4 to 11
      while (bits < 11 && (1 << bits) < m) {
        bits++;
      }
      long range = hi - lo; // unsigned
      int top = 63 - Long.numberOfLeadingZeros(range);
      int shift = top + 1 > bits ? top + 1 - bits : 0;
      int nb = (int) (range >>> shift) + 1;
      Arrays.fill(count, 0, nb, 0);
      for (int i = from; i < to; i++) {
        count[(int) ((keys[idx[i]] - lo) >>> shift)]++;
      }
      int sum = 0;
      int largest = 0;
      for (int d = 0; d < nb; d++) {
        int c = count[d];
        largest = Math.max(largest, c);
        count[d] = sum;
        sum += c;
      }
      for (int i = from; i < to; i++) {
        int v = idx[i];
        tmp[from + count[(int) ((keys[v] - lo) >>> shift)]++] = v;
      }
      System.arraycopy(tmp, from, idx, from, m);
      if (shift == 0) {
        return; // one key per bucket value: sorted
      }
      if (largest > 16) { // (rare: clustered keys) sort the large buckets on their own range
        for (int a = from; a < to; ) {
          long d = (keys[idx[a]] - lo) >>> shift;
          int b = a + 1;
          while (b < to && ((keys[idx[b]] - lo) >>> shift) == d) {
            b++;
          }
          if (b - a > 16) {
            radixSort(keys, idx, a, b - a, tmp, count);
          }
          a = b;
        }
      }
    }
    for (int i = from + 1; i < to; i++) { // insertion sort (stable)
      int v = idx[i];
      long kv = keys[v];
      int j = i;
      for (; j > from && keys[idx[j - 1]] > kv; j--) {
        idx[j] = idx[j - 1];
      }
      idx[j] = v;
    }
  }

  /** Exploratory weights from a generator: gaussian (truncated by rejection) or uniform. */
  public Sample sample(double[] keyValues, RandomGenerator rng) {
    if (exploration == null) {
      throw new IllegalStateException("table has no exploration block");
    }
    DoubleSupplier draws = exploration.equals("gaussian") ? rng::nextGaussian : rng::nextDouble;
    return sampleFromDraws(keyValues, draws, Integer.MAX_VALUE);
  }

  /**
   * Exploratory weights from given draws, consumed in task order (the reference's {@code
   * sample_from_draws}): gaussian {@code w = mu + sigma * z}, redrawn until inside the bounds;
   * uniform {@code w = lo + (hi - lo) * u}.
   *
   * @throws IllegalArgumentException more than {@code maxDraws} draws needed, or a uniform draw
   *     outside [0, 1)
   */
  public Sample sampleFromDraws(double[] keyValues, DoubleSupplier draws, int maxDraws) {
    if (exploration == null) {
      throw new IllegalStateException("table has no exploration block");
    }
    int r = rowIndex(keyValues);
    int row = r < 0 ? nRows : r;
    int k = tasks.length;
    double[] mu = weights[row];
    double[] w = new double[k];
    double q = 0;
    int used = 0;
    boolean gaussian = exploration.equals("gaussian");
    for (int t = 0; t < k; t++) {
      while (true) {
        if (used >= maxDraws) {
          throw new IllegalArgumentException("sample: ran out of draws after " + used + " (task '"
              + tasks[t] + "' still rejected); pass more draws");
        }
        double dr = draws.getAsDouble();
        used++;
        if (!gaussian) {
          if (!(dr >= 0.0 && dr < 1.0)) {
            throw new IllegalArgumentException("sample: expected uniform draws in [0, 1), found " + dr);
          }
          w[t] = sampleLo[row][t] + (sampleHi[row][t] - sampleLo[row][t]) * dr;
          break;
        }
        double v = mu[t] + scale[t] * dr;
        if (sampleLo[row][t] <= v && v <= sampleHi[row][t]) {
          w[t] = v;
          double z = (v - mu[t]) / scale[t];
          q += z * z;
          break;
        }
      }
    }
    return new Sample(w, logpConst[row] - 0.5 * q);
  }

  // ------------------------------------------------------------------------------------ helpers

  @SuppressWarnings("unchecked")
  static Map<String, Object> obj(Object x, String where) throws TableException {
    if (!(x instanceof Map)) {
      throw new TableException(where + ": expected an object, found " + kind(x));
    }
    return (Map<String, Object>) x;
  }

  @SuppressWarnings("unchecked")
  static List<Object> list(Object x, String where) throws TableException {
    if (!(x instanceof List)) {
      throw new TableException(where + ": expected a list, found " + kind(x));
    }
    return (List<Object>) x;
  }

  static String kind(Object x) {
    if (x instanceof Map) {
      return "object";
    }
    if (x instanceof List) {
      return "list";
    }
    if (x instanceof String) {
      return "string";
    }
    if (x instanceof Boolean) {
      return "boolean";
    }
    if (x instanceof StrictJson.Num) {
      return "number";
    }
    return "null";
  }

  static String show(Object x) {
    String s = x instanceof String ? "'" + x + "'" : String.valueOf(x);
    return s.length() <= 60 ? s : s.substring(0, 57) + "...";
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
