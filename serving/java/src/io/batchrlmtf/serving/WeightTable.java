package io.batchrlmtf.serving;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.DoubleSupplier;
import java.util.random.RandomGenerator;

/**
 * A validated weight table ({@code batchrl-mtf/weight-table@1}, see docs/weight-table.md).
 *
 * <p>{@link #load} validates everything the Python reference validates and throws a {@link
 * TableException} whose message names the field and row. After loading, a table is immutable:
 * every method may be called from any number of threads at once.
 *
 * <p>This class is the public face of the package and does the row lookup itself; the other jobs
 * live in package-private classes: {@link TableReader} (validating the document and building the
 * arrays), {@link Fusion} (scores), {@link Ranking} (order) and {@link Exploration} (sampling).
 */
public final class WeightTable {
  public static final String FORMAT = "batchrl-mtf/weight-table@1";
  public static final int MAX_CELLS = 1 << 22;

  private final String[] tasks;
  private final boolean logsum;
  private final double[] betaRep; // beta repeated for one block of candidates (Fusion.logsum)
  private final String[] keyNames;
  private final double[][] edges;
  private final int[] strides;
  private final int[] cellRow;
  private final double[][] weights; // rows, then the default as the last entry
  private final int nRows;
  private final Exploration exploration; // null: no exploration block

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
      return new WeightTable(new TableReader(StrictJson.parse(sb.toString())));
    } catch (TableException e) {
      throw new TableException(source + ": " + e.getMessage());
    }
  }

  /** Parses and validates UTF-8 JSON bytes; messages start with {@code source}. */
  public static WeightTable parse(byte[] data, String source) throws TableException {
    try {
      return new WeightTable(new TableReader(StrictJson.parse(data)));
    } catch (TableException e) {
      throw new TableException(source + ": " + e.getMessage());
    }
  }

  private WeightTable(TableReader t) {
    tasks = t.tasks;
    logsum = t.logsum;
    betaRep = t.betaRep;
    keyNames = t.keyNames;
    edges = t.edges;
    strides = t.strides;
    cellRow = t.cellRow;
    weights = t.weights;
    nRows = t.nRows;
    exploration = t.exploration;
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
      Fusion.logsum(tasks, betaRep, preds, n, w, out);
      return;
    }
    Fusion.sum(tasks, preds, n, w, out);
  }

  /** Candidate indices from the best score to the worst; ties by index; NaN last. */
  public static int[] rank(double[] scores, int n) {
    int[] order = new int[n];
    rankInto(scores, n, order, new long[2 * n], new int[n]);
    return order;
  }

  /**
   * As {@link #rank} into {@code order} (length >= n) with caller-owned scratch arrays ({@code
   * keys} length >= 2n, {@code tmp} length >= n): no allocation on the hot path. Keys that order
   * the scores best first as signed longs (NaN last; 0.0 ties with -0.0), then a stable radix sort
   * of the indices by key (see {@link Ranking}): exactly a sort on (score, index).
   */
  public static void rankInto(double[] scores, int n, int[] order, long[] keys, int[] tmp) {
    Ranking.rankInto(scores, n, order, keys, tmp);
  }

  /** Exploratory weights from a generator: gaussian (truncated by rejection) or uniform. */
  public Sample sample(double[] keyValues, RandomGenerator rng) {
    if (exploration == null) {
      throw new IllegalStateException("table has no exploration block");
    }
    DoubleSupplier draws = exploration.gaussian ? rng::nextGaussian : rng::nextDouble;
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
    return exploration.draw(row, weights[row], tasks, draws, maxDraws);
  }

  // ------------------------------------------------------------------------------------ helpers
  // (kept here for Score's request messages; see JsonValues)

  static Map<String, Object> obj(Object x, String where) throws TableException {
    return JsonValues.obj(x, where);
  }

  static String show(Object x) {
    return JsonValues.show(x);
  }
}
