package io.batchrlmtf.serving;

import java.util.List;
import java.util.Map;

/**
 * Strict JSON values ({@link StrictJson}) for validation: the casts that name the field on a wrong
 * kind, and how a value is described in a message. Shared by {@link TableReader} and {@link Score}.
 */
final class JsonValues {
  private JsonValues() {}

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
}
