package io.batchrlmtf.serving;

/**
 * The scores of a request's candidates ({@link WeightTable#fuseInto}): formula sum, or logsum
 * block by block. {@code preds} is row-major (n, k) in task order; a NaN prediction makes the score
 * NaN. Shapes are checked by the caller.
 */
final class Fusion {
  /** Candidates per block of {@link #logsum}: its k * BLOCK values stay in the L1 cache. */
  static final int BLOCK = 256;
  /** Bits of 1.0: a double in [+0.0, 1.0] has bits b <= ONE_BITS (as a signed long too). */
  private static final long ONE_BITS = 0x3FF0000000000000L;
  private static final ThreadLocal<double[][]> FUSE_SCRATCH = new ThreadLocal<>();

  private Fusion() {}

  /**
   * Formula sum: {@code out[i] = sum_t w[t] * p[i][t]}.
   *
   * @throws IllegalArgumentException an infinite prediction (the message names candidate and
   *     task), or a score that overflows a double
   */
  static void sum(String[] tasks, double[] preds, int n, double[] w, double[] out) {
    int k = tasks.length;
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

  /**
   * Block by block: x = p + beta with a branch-free range check (the sign bit of (ONE_BITS - b) | b
   * is set for any value outside [+0.0, 1.0], NaN and -0.0 included, so that a second look is
   * needed only then), the block's logarithms ({@link BlockLog}: vectorised, within 2 ulp), then
   * the weighted sums in task order.
   */
  static void logsum(String[] tasks, double[] betaRep, double[] preds, int n, double[] w, double[] out) {
    int k = tasks.length;
    double[][] scratch = FUSE_SCRATCH.get();
    if (scratch == null || scratch[0].length < BLOCK * k) {
      scratch = new double[][] {new double[BLOCK * k], new double[BLOCK * k]};
      FUSE_SCRATCH.set(scratch);
    }
    double[] x = scratch[0];
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
}
