package io.batchrlmtf.serving;

/** A weight table or a request that does not follow the contract; the message names the field. */
public final class TableException extends Exception {
  private static final long serialVersionUID = 1L;

  public TableException(String message) {
    super(message);
  }
}
