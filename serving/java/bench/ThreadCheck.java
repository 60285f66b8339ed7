import io.batchrlmtf.serving.TableException;
import io.batchrlmtf.serving.WeightTable;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;

/** thread-check-java TABLE.json: 8 threads score the same requests as one; exit 0 if identical. */
public final class ThreadCheck {
  public static void main(String[] args) throws Exception {
    WeightTable table = WeightTable.load(Path.of(args[0]));
    int k = table.tasks().length;
    int d = table.keyNames().length;
    int n = 300;
    int reqs = 200;
    SplittableRandom rng = new SplittableRandom(1);
    double[][] x = new double[reqs][d];
    for (double[] row : x) {
      for (int j = 0; j < d; j++) {
        row[j] = rng.nextGaussian();
      }
    }
    double[] p = new double[n * k];
    for (int i = 0; i < p.length; i++) {
      p[i] = rng.nextDouble();
    }
    int[][] serial = run(table, x, p, n);
    int[][][] got = new int[8][][];
    Thread[] threads = new Thread[8];
    for (int t = 0; t < 8; t++) {
      final int tt = t;
      threads[t] = new Thread(() -> got[tt] = run(table, x, p, n));
      threads[t].start();
    }
    for (Thread t : threads) {
      t.join();
    }
    for (int t = 0; t < 8; t++) {
      if (!Arrays.deepEquals(got[t], serial)) {
        System.out.println("thread " + t + " differs");
        System.exit(1);
      }
    }
    System.out.println("8 threads agree with the serial run");
  }

  private static int[][] run(WeightTable table, double[][] x, double[] p, int n) {
    int[][] out = new int[x.length][];
    for (int rep = 0; rep < 20; rep++) {
      for (int r = 0; r < x.length; r++) {
        double[] scores = table.fuse(p, n, table.lookup(x[r]));
        int[] order = WeightTable.rank(scores, n);
        int[] both = Arrays.copyOf(order, 2 * n);
        for (int i = 0; i < n; i++) {
          both[n + i] = (int) Double.doubleToLongBits(scores[i]) ^ (int) (Double.doubleToLongBits(scores[i]) >>> 32);
        }
        out[r] = both;
      }
    }
    return out;
  }
}
