package io.batchrlmtf.serving;

/** The error function to about 1e-16 relative (Java has none): a series of positive terms. */
final class Erf {
  private static final double TWO_OVER_SQRT_PI = 1.1283791670955126;

  private Erf() {}

  /**
   * erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)) (Abramowitz and Stegun
   * 7.1.6): every term is positive, so there is no cancellation; for |x| >= 6, erf(x) rounds to
   * +-1 in double precision.
   */
  static double erf(double x) {
    if (Double.isNaN(x)) {
      return x;
    }
    double ax = Math.abs(x);
    if (ax >= 6.0) {
      return Math.copySign(1.0, x);
    }
    double x2 = ax * ax;
    double term = ax;
    double sum = ax;
    for (int n = 1; n < 500; n++) {
      term *= 2.0 * x2 / (2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) {
        break;
      }
    }
    double r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
    return Math.copySign(Math.min(r, 1.0), x);
  }
}
