package io.batchrlmtf.serving;

import java.util.Arrays;

/**
 * Candidate indices from the best score to the worst ({@link WeightTable#rank}): ties by index, NaN
 * last, by a stable radix sort of keys that order the scores.
 */
final class Ranking {
  private static final ThreadLocal<int[]> RANK_COUNT = ThreadLocal.withInitial(() -> new int[2048]);

  private Ranking() {}

  /**
   * Into {@code order} (length >= n) with caller-owned scratch arrays ({@code keys} length >= 2n,
   * {@code tmp} length >= n): no allocation on the hot path. Keys that order the scores best first
   * as signed longs (NaN last; 0.0 ties with -0.0), then a stable radix sort of the indices by key
   * (see {@link #radixSort}): exactly a sort on (score, index).
   */
  static void rankInto(double[] scores, int n, int[] order, long[] keys, int[] tmp) {
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
}
