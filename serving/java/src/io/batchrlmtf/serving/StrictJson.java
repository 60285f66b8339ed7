package io.batchrlmtf.serving;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.AbstractMap;
import java.util.AbstractSet;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Set;

/**
 * Strict, bounded JSON as batchrl-mtf reads it (the same rules as {@code batchrl_mtf.serving._json}):
 * UTF-8 only (a UTF-8 BOM is skipped), at most {@link #MAX_BYTES} bytes, no NaN/Infinity tokens, no
 * number that overflows a double, number tokens at most {@link #MAX_NUMBER_CHARS} characters,
 * nesting at most {@link #MAX_DEPTH} levels (the top-level value is depth 1), no duplicate keys,
 * nothing after the value.
 *
 * <p>Values: {@code Map<String,Object>} (insertion order), {@code List<Object>} (both immutable),
 * {@code String}, {@link Num}, {@code Boolean}, and {@link #NULL} for JSON null.
 */
public final class StrictJson {
  public static final long MAX_BYTES = 256L << 20;
  public static final int MAX_DEPTH = 64;
  public static final int MAX_NUMBER_CHARS = 100;
  /** JSON null. */
  public static final Object NULL = new Object() {
    @Override
    public String toString() {
      return "null";
    }
  };

  private static final JsonFactory FACTORY = new JsonFactory();

  /**
   * A JSON number: its double value, whether it was written as an integer and, for an integer,
   * its text (exact beyond 2^53; {@code null} for other numbers, so that a large table's numbers
   * stay small in memory).
   */
  public static final class Num {
    public final double value;
    public final boolean integer;
    public final String text;

    Num(double value, boolean integer, String text) {
      this.value = value;
      this.integer = integer;
      this.text = integer ? text : null;
    }

    @Override
    public String toString() {
      return text != null ? text : Double.toString(value);
    }
  }

  private StrictJson() {}

  /** Parses UTF-8 bytes. @throws TableException "not UTF-8 text ..." or "not valid JSON (...)". */
  public static Object parse(byte[] data) throws TableException {
    if (data.length > MAX_BYTES) {
      throw new TableException("expected at most " + MAX_BYTES + " bytes of JSON, found " + data.length);
    }
    int start = 0;
    if (data.length >= 3 && (data[0] & 0xff) == 0xef && (data[1] & 0xff) == 0xbb && (data[2] & 0xff) == 0xbf) {
      start = 3;
    }
    int len = data.length - start;
    if (len >= 4 && (data[start] == 0 || data[start + 1] == 0 || data[start + 2] == 0 || data[start + 3] == 0)) {
      // Jackson would guess UTF-16/32 from the zero bytes: decode as UTF-8 strictly instead.
      CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT);
      String text;
      try {
        text = dec.decode(ByteBuffer.wrap(data, start, len)).toString();
      } catch (CharacterCodingException e) {
        throw new TableException("not UTF-8 text (JSON files are UTF-8, re-save it as UTF-8)");
      }
      return parse(text);
    }
    // The bytes directly (no decoded copy of the whole text): check UTF-8 and nesting, then parse.
    if (!validUtf8(data, start, data.length)) {
      throw new TableException("not UTF-8 text (JSON files are UTF-8, re-save it as UTF-8)");
    }
    checkDepth(data, start);
    try (JsonParser p = FACTORY.createParser(data, start, len)) {
      return parse(p);
    } catch (IOException e) {
      throw new TableException("not valid JSON (" + e.getMessage() + ")");
    }
  }

  /**
   * Whether bytes [from, to) are UTF-8 as {@code CharsetDecoder} with {@code REPORT} accepts it: no
   * overlong forms, no surrogates, nothing above U+10FFFF, no truncated sequence.
   */
  static boolean validUtf8(byte[] b, int from, int to) {
    int i = from;
    while (i < to) {
      int c = b[i];
      if (c >= 0) {
        i++;
        continue;
      }
      c &= 0xFF;
      int len;
      int cp;
      if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
      } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
      } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
      } else {
        return false;
      }
      if (i + len > to) {
        return false;
      }
      for (int j = 1; j < len; j++) {
        int cc = b[i + j] & 0xFF;
        if ((cc & 0xC0) != 0x80) {
          return false;
        }
        cp = (cp << 6) | (cc & 0x3F);
      }
      if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))
          || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return false;
      }
      i += len;
    }
    return true;
  }

  /**
   * Rejects nesting deeper than MAX_DEPTH before parsing (brackets inside strings ignored), on
   * UTF-8 bytes (brackets and quotes are single bytes).
   */
  private static void checkDepth(byte[] s, int from) throws TableException {
    int depth = 0;
    boolean inString = false;
    for (int i = from, n = s.length; i < n; i++) {
      byte c = s[i];
      if (inString) {
        if (c == '\\') {
          i++;
        } else if (c == '"') {
          inString = false;
        }
      } else if (c == '"') {
        inString = true;
      } else if (c == '[' || c == '{') {
        if (++depth > MAX_DEPTH) {
          throw new TableException("not valid JSON (nesting deeper than " + MAX_DEPTH + " levels)");
        }
      } else if (c == ']' || c == '}') {
        depth--;
      }
    }
  }

  /** Parses text. @throws TableException "not valid JSON (...)". */
  public static Object parse(String text) throws TableException {
    checkDepth(text.getBytes(StandardCharsets.UTF_8), 0);
    try (JsonParser p = FACTORY.createParser(text)) {
      return parse(p);
    } catch (IOException e) {
      throw new TableException("not valid JSON (" + e.getMessage() + ")");
    }
  }

  private static Object parse(JsonParser p) throws IOException, TableException {
    try {
      JsonToken first = p.nextToken();
      if (first == null) {
        throw new TableException("not valid JSON (no value)");
      }
      Object value = read(p, first);
      if (p.nextToken() != null) {
        throw new TableException("not valid JSON (extra data after the value)");
      }
      return value;
    } catch (JsonProcessingException e) {
      String msg = e.getOriginalMessage();
      int nl = msg.indexOf('\n');
      throw new TableException("not valid JSON (" + (nl >= 0 ? msg.substring(0, nl) : msg) + ")");
    }
  }

  private static Object read(JsonParser p, JsonToken first) throws IOException, TableException {
    // Iterative: an explicit stack of open containers (depth is bounded by checkDepth anyway). A
    // container is built while open (ObjectBuilder, ArrayList) and becomes its compact, immutable
    // value when it closes: a large table's tree stays small, the builders die young.
    Deque<Object> stack = new ArrayDeque<>();
    JsonToken t = first;
    while (true) {
      Object value;
      switch (t) {
        case START_OBJECT:
          stack.push(new ObjectBuilder());
          t = next(p);
          continue;
        case START_ARRAY:
          stack.push(new ArrayList<Object>(4));
          t = next(p);
          continue;
        case END_OBJECT:
          value = ((ObjectBuilder) stack.pop()).build();
          break;
        case END_ARRAY:
          value = List.copyOf((List<?>) stack.pop());
          break;
        case FIELD_NAME:
          ((ObjectBuilder) stack.peek()).key(p.getCurrentName());
          t = next(p);
          continue;
        case VALUE_STRING:
          value = p.getText();
          break;
        case VALUE_NUMBER_INT:
        case VALUE_NUMBER_FLOAT: {
          String text = p.getText();
          if (text.length() > MAX_NUMBER_CHARS) {
            throw new TableException("not valid JSON (a number of " + text.length()
                + " characters (at most " + MAX_NUMBER_CHARS + "))");
          }
          double d = Double.parseDouble(text);
          if (Double.isInfinite(d) || Double.isNaN(d)) {
            throw new TableException("not valid JSON (number " + text + " overflows a double)");
          }
          value = new Num(d, t == JsonToken.VALUE_NUMBER_INT, text);
          break;
        }
        case VALUE_TRUE:
          value = Boolean.TRUE;
          break;
        case VALUE_FALSE:
          value = Boolean.FALSE;
          break;
        case VALUE_NULL:
          value = NULL;
          break;
        default:
          throw new TableException("not valid JSON (unexpected token " + t + ")");
      }
      if (stack.isEmpty()) {
        return value;
      }
      Object top = stack.peek();
      if (top instanceof ObjectBuilder) {
        ((ObjectBuilder) top).value(value);
      } else {
        @SuppressWarnings("unchecked")
        List<Object> l = (List<Object>) top;
        l.add(value);
      }
      t = next(p);
    }
  }

  private static JsonToken next(JsonParser p) throws IOException, TableException {
    JsonToken t = p.nextToken();
    if (t == null) {
      throw new TableException("not valid JSON (unexpected end of input)");
    }
    return t;
  }

  /** An open JSON object: its keys in order (a duplicate is refused as soon as it is read). */
  private static final class ObjectBuilder {
    private final ArrayList<String> keys = new ArrayList<>(8);
    private final ArrayList<Object> values = new ArrayList<>(8);
    private HashSet<String> seen; // from SMALL keys on

    void key(String name) throws TableException {
      boolean dup;
      if (seen != null) {
        dup = !seen.add(name);
      } else {
        dup = keys.contains(name);
        if (!dup && keys.size() == SmallMap.SMALL) {
          seen = new HashSet<>(keys);
          seen.add(name);
        }
      }
      if (dup) {
        throw new TableException("not valid JSON (duplicate key '" + name + "' in an object)");
      }
      keys.add(name);
    }

    void value(Object v) {
      values.add(v);
    }

    Map<String, Object> build() {
      if (keys.size() <= SmallMap.SMALL) {
        return new SmallMap(keys.toArray(new String[0]), values.toArray());
      }
      Map<String, Object> m = new LinkedHashMap<>(keys.size() * 2);
      for (int i = 0; i < keys.size(); i++) {
        m.put(keys.get(i), values.get(i));
      }
      return Collections.unmodifiableMap(m);
    }
  }

  /** An immutable object of at most SMALL keys in insertion order: two arrays, linear lookups. */
  private static final class SmallMap extends AbstractMap<String, Object> {
    static final int SMALL = 8;
    private final String[] keys;
    private final Object[] values;

    SmallMap(String[] keys, Object[] values) {
      this.keys = keys;
      this.values = values;
    }

    private int index(Object key) {
      for (int i = 0; i < keys.length; i++) {
        if (keys[i].equals(key)) {
          return i;
        }
      }
      return -1;
    }

    @Override
    public int size() {
      return keys.length;
    }

    @Override
    public boolean containsKey(Object key) {
      return index(key) >= 0;
    }

    @Override
    public Object get(Object key) {
      int i = index(key);
      return i < 0 ? null : values[i];
    }

    @Override
    public Set<Map.Entry<String, Object>> entrySet() {
      return new AbstractSet<>() {
        @Override
        public int size() {
          return keys.length;
        }

        @Override
        public Iterator<Map.Entry<String, Object>> iterator() {
          return new Iterator<>() {
            private int i;

            @Override
            public boolean hasNext() {
              return i < keys.length;
            }

            @Override
            public Map.Entry<String, Object> next() {
              if (i >= keys.length) {
                throw new NoSuchElementException();
              }
              Map.Entry<String, Object> e = new AbstractMap.SimpleImmutableEntry<>(keys[i], values[i]);
              i++;
              return e;
            }
          };
        }
      };
    }
  }
}
