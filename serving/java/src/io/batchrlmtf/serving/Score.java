package io.batchrlmtf.serving;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;

/**
 * {@code score TABLE.json < requests.jsonl > responses.jsonl}: the scorer contract shared with
 * {@code batchrl-mtf score} (see batchrl_mtf/serving/scoring.py and docs/serving.md).
 */
public final class Score {
  private Score() {}

  public static void main(String[] args) throws IOException {
    if (args.length != 1) {
      System.err.println("error: usage: score TABLE.json < requests.jsonl > responses.jsonl");
      System.exit(2);
    }
    WeightTable table;
    try {
      table = WeightTable.load(Path.of(args[0]));
    } catch (TableException e) {
      System.err.println("error: " + e.getMessage().replace('\n', ' '));
      System.exit(2);
      return;
    }
    PrintStream out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16), false, StandardCharsets.UTF_8);
    int n = 0;
    int errors = 0;
    String first = "";
    InputStream in = System.in;
    int number = 0;
    for (byte[] line : new LineReader(in)) {
      number++;
      if (isBlank(line)) {
        continue;
      }
      n++;
      String response;
      try {
        response = scoreLine(table, StrictJson.parse(line));
      } catch (TableException | IllegalArgumentException | IllegalStateException e) {
        String msg = "line " + number + ": " + e.getMessage();
        response = "{\"error\":" + quote(msg) + "}";
        errors++;
        if (first.isEmpty()) {
          first = msg;
        }
      }
      out.print(response);
      out.print('\n');
    }
    out.flush();
    if (errors > 0) {
      System.err.println("error: " + errors + " of " + n + " requests invalid (first: " + first + ")");
      System.exit(2);
    }
  }

  private static boolean isBlank(byte[] line) {
    for (byte b : line) {
      if (b != ' ' && b != '\t' && b != '\r' && b != '\n') {
        return false;
      }
    }
    return true;
  }

  /** One request (parsed strict JSON) to one response line. */
  static String scoreLine(WeightTable table, Object doc) throws TableException {
    if (!(doc instanceof Map)) {
      throw new TableException("request: expected a JSON object, found " + WeightTable.show(doc));
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> req = (Map<String, Object>) doc;
    for (String f : req.keySet()) {
      if (!f.equals("features") && !f.equals("preds") && !f.equals("draws")) {
        throw new TableException("request: unknown field(s) [" + f + "]");
      }
    }
    Map<String, Object> feats = obj(req.get("features"), "features");
    String[] keys = table.keyNames();
    double[] x = new double[keys.length];
    for (int j = 0; j < keys.length; j++) {
      if (!feats.containsKey(keys[j])) {
        throw new TableException("features: missing key feature '" + keys[j] + "'");
      }
      Object v = feats.get(keys[j]);
      if (v == StrictJson.NULL) {
        x[j] = Double.NaN;
      } else if (v instanceof StrictJson.Num) {
        x[j] = ((StrictJson.Num) v).value;
      } else {
        throw new TableException("features." + keys[j] + ": expected a number or null, found " + WeightTable.show(v));
      }
    }
    Map<String, Object> preds = obj(req.get("preds"), "preds");
    String[] tasks = table.tasks();
    if (!preds.keySet().equals(new HashSet<>(Arrays.asList(tasks)))) {
      throw new TableException("preds: expected exactly the tasks " + Arrays.toString(tasks));
    }
    int k = tasks.length;
    int n = -1;
    double[] p = null;
    for (int t = 0; t < k; t++) {
      Object col = preds.get(tasks[t]);
      if (!(col instanceof List)) {
        throw new TableException("preds." + tasks[t] + ": expected a list, found " + WeightTable.show(col));
      }
      List<?> c = (List<?>) col;
      if (n >= 0 && c.size() != n) {
        throw new TableException("preds." + tasks[t] + ": expected " + n + " predictions (as the first task), found " + c.size());
      }
      if (n < 0) {
        n = c.size();
        p = new double[n * k];
      }
      for (int i = 0; i < n; i++) {
        Object v = c.get(i);
        if (v == StrictJson.NULL) {
          p[i * k + t] = Double.NaN;
        } else if (v instanceof StrictJson.Num) {
          p[i * k + t] = ((StrictJson.Num) v).value;
        } else {
          throw new TableException("preds." + tasks[t] + "[" + i + "]: expected a number or null, found " + WeightTable.show(v));
        }
      }
    }
    double[] w;
    String logp = null;
    if (req.containsKey("draws")) {
      if (!table.hasExploration()) {
        throw new TableException("draws: the table has no exploration block to sample from");
      }
      Object dr = req.get("draws");
      if (!(dr instanceof List)) {
        throw new TableException("draws: expected a list of numbers, found " + WeightTable.show(dr));
      }
      List<?> dl = (List<?>) dr;
      double[] draws = new double[dl.size()];
      for (int i = 0; i < draws.length; i++) {
        if (!(dl.get(i) instanceof StrictJson.Num)) {
          throw new TableException("draws: expected a list of numbers, found " + WeightTable.show(dr));
        }
        draws[i] = ((StrictJson.Num) dl.get(i)).value;
      }
      int[] next = {0};
      WeightTable.Sample s = table.sampleFromDraws(x, () -> draws[next[0]++], draws.length);
      w = s.weights;
      logp = num(s.behaviorLogp);
    } else {
      w = table.lookup(x);
    }
    double[] scores = table.fuse(p, n, w);
    int[] order = WeightTable.rank(scores, n);
    StringBuilder sb = new StringBuilder(32 + 24 * n);
    if (logp != null) {
      sb.append("{\"behavior_logp\":").append(logp).append(",\"weights\":{");
    } else {
      sb.append("{\"weights\":{");
    }
    for (int t = 0; t < k; t++) {
      sb.append(t == 0 ? "" : ",").append(quote("w_" + tasks[t])).append(':').append(num(w[t]));
    }
    sb.append("},\"scores\":[");
    for (int i = 0; i < n; i++) {
      sb.append(i == 0 ? "" : ",").append(Double.isNaN(scores[i]) ? "null" : num(scores[i]));
    }
    sb.append("],\"order\":[");
    for (int i = 0; i < n; i++) {
      sb.append(i == 0 ? "" : ",").append(order[i]);
    }
    return sb.append("]}").toString();
  }

  private static Map<String, Object> obj(Object x, String where) throws TableException {
    return WeightTable.obj(x, where);
  }

  private static String num(double v) {
    return Double.toString(v);
  }

  static String quote(String s) {
    StringBuilder sb = new StringBuilder(s.length() + 2).append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        sb.append('\\').append(c);
      } else if (c < 0x20) {
        sb.append(String.format("\\u%04x", (int) c));
      } else {
        sb.append(c);
      }
    }
    return sb.append('"').toString();
  }

  /** Lines of raw bytes (split at '\n', read as they come), each checked as UTF-8 by itself. */
  private static final class LineReader implements Iterable<byte[]> {
    private final InputStream in;

    LineReader(InputStream in) {
      this.in = new java.io.BufferedInputStream(in, 1 << 16);
    }

    @Override
    public java.util.Iterator<byte[]> iterator() {
      return new java.util.Iterator<byte[]>() {
        private byte[] next = read();

        private byte[] read() {
          java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream(256);
          try {
            int b = in.read();
            if (b < 0) {
              return null;
            }
            while (b >= 0 && b != '\n') {
              buf.write(b);
              b = in.read();
            }
          } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
          }
          return buf.toByteArray();
        }

        @Override
        public boolean hasNext() {
          return next != null;
        }

        @Override
        public byte[] next() {
          byte[] line = next;
          next = read();
          return line;
        }
      };
    }
  }
}
