package io.batchrlmtf.serving;

import java.util.function.DoubleSupplier;

/**
 * A table's exploration block: gaussian (truncated to the action bounds) or uniform (a box of
 * halfwidth around the weights, within the bounds); per row (and default) the sampling box and the
 * log-density constant, and the draws of {@link WeightTable#sampleFromDraws}.
 */
final class Exploration {
  private static final double LOG_SQRT_2PI = 0.5 * Math.log(2.0 * Math.PI);

  final boolean gaussian; // else uniform
  private final double[] scale; // sigma or halfwidth, task order
  private final double[][] sampleLo;
  private final double[][] sampleHi;
  private final double[] logpConst;

  /** {@code weights}: the rows', then the default's (task order); {@code low}, {@code high}: the bounds. */
  Exploration(boolean gaussian, double[] scale, double[][] weights, double[] low, double[] high) {
    this.gaussian = gaussian;
    this.scale = scale;
    int nRows = weights.length - 1;
    int k = scale.length;
    sampleLo = new double[nRows + 1][k];
    sampleHi = new double[nRows + 1][k];
    logpConst = new double[nRows + 1];
    for (int r = 0; r <= nRows; r++) {
      double c = 0;
      for (int t = 0; t < k; t++) {
        double mu = weights[r][t];
        double lo = low[t];
        double hi = high[t];
        if (!gaussian) {
          lo = Math.max(mu - scale[t], low[t]);
          hi = Math.min(mu + scale[t], high[t]);
          c -= Math.log(hi - lo);
        } else {
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

  /**
   * Exploratory weights around {@code mu} (row {@code row}'s weights) from draws consumed in task
   * order; see {@link WeightTable#sampleFromDraws}.
   */
  WeightTable.Sample draw(int row, double[] mu, String[] tasks, DoubleSupplier draws, int maxDraws) {
    int k = tasks.length;
    double[] w = new double[k];
    double q = 0;
    int used = 0;
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
    return new WeightTable.Sample(w, logpConst[row] - 0.5 * q);
  }
}
