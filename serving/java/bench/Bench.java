import io.batchrlmtf.serving.TableException;
import io.batchrlmtf.serving.WeightTable;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;

/** bench-java TABLE.json N ITERS: load time, then p50/p99 of lookup + fuse + rank (JSON line). */
public final class Bench {
  public static void main(String[] args) throws TableException {
    ThreadMXBean mx = ManagementFactory.getThreadMXBean();
    long t0 = System.nanoTime();
    long c0 = mx.getCurrentThreadCpuTime();
    WeightTable table = WeightTable.load(Path.of(args[0]));
    double loadS = (System.nanoTime() - t0) / 1e9;
    double loadCpuS = (mx.getCurrentThreadCpuTime() - c0) / 1e9;
    int n = Integer.parseInt(args[1]);
    int iters = Integer.parseInt(args[2]);
    int k = table.tasks().length;
    int d = table.keyNames().length;
    SplittableRandom rng = new SplittableRandom(0);
    double[] preds = new double[n * k];
    for (int i = 0; i < preds.length; i++) {
      preds[i] = 0.001 + 0.998 * rng.nextDouble();
    }
    double[] x = new double[d];
    double[] scores = new double[n];
    int[] order = new int[n];
    long[] keys = new long[2 * n];
    int[] tmp = new int[n];
    long[] times = new long[iters];
    long[] cpuTimes = new long[iters];
    long sink = 0;
    int warm = Math.max(20000, iters); // let C2 compile the hot loops (it shares the cores) first
    for (int it = -warm; it < iters; it++) {
      for (int j = 0; j < d; j++) {
        x[j] = rng.nextGaussian();
      }
      long cs = mx.getCurrentThreadCpuTime();
      long s = System.nanoTime();
      double[] w = table.lookup(x);
      table.fuseInto(preds, n, w, scores);
      WeightTable.rankInto(scores, n, order, keys, tmp);
      long e = System.nanoTime();
      long ce = mx.getCurrentThreadCpuTime();
      sink += order[0];
      if (it >= 0) {
        times[it] = e - s;
        cpuTimes[it] = ce - cs;
      }
    }
    Arrays.sort(times);
    Arrays.sort(cpuTimes);
    int p50 = iters / 2;
    int p99 = (int) (iters * 0.99);
    System.out.printf("{\"lang\":\"java\",\"load_s\":%.4f,\"load_cpu_s\":%.4f,\"p50_us\":%.2f,"
        + "\"p99_us\":%.2f,\"cpu_p50_us\":%.2f,\"cpu_p99_us\":%.2f,\"sink\":%d}%n",
        loadS, loadCpuS, times[p50] / 1e3, times[p99] / 1e3, cpuTimes[p50] / 1e3, cpuTimes[p99] / 1e3, sink);
  }
}
