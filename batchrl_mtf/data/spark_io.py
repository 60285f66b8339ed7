"""The Spark engine's files: listing the inputs (local paths and Hadoop-compatible URIs), hashing
the written parts, and writing a dataset to a URI (``batchrl-mtf build-dataset --engine spark``,
:mod:`batchrl_mtf.data.spark`)."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.errors import SchemaError

__all__ = [
    "column_names",
    "hadoop_fs",
    "hash_parts",
    "input_files",
    "is_uri",
    "norm_uri",
    "sha_parts_local",
    "sha_parts_remote",
    "spark_uri",
    "write_remote",
]


def is_uri(path: str) -> bool:
    """A Hadoop-compatible URI (``hdfs://``, ``s3a://``, ...), not a local path or ``file:``."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path)) and not path.startswith("file:")


def norm_uri(uri: str) -> str:
    """One spelling per file: a local path for ``file:`` URIs and plain paths, else the URI."""
    if uri.startswith("file:"):
        return os.path.normpath(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    if is_uri(uri):
        return uri
    return os.path.normpath(os.path.abspath(uri))


def hadoop_fs(spark: Any, uri: str) -> tuple[Any, Any]:
    """The Hadoop file system of ``uri`` and its path object."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def input_files(spark: Any, paths: Sequence[str | Path]) -> list[str]:
    """Expand inputs like :func:`batchrl_mtf.logs.schema.read_logs` (directories recursively, in name
    order); local paths keep their spelling, other URIs are listed through Hadoop."""
    if not paths:
        raise SchemaError("no log files given; expected one or more Parquet files or directories")
    out: list[str] = []
    for raw in paths:
        text = str(raw)
        if is_uri(text):
            fs, path = hadoop_fs(spark, text)
            if not fs.exists(path):
                raise SchemaError(f"{text}: no such file or directory")
            if fs.getFileStatus(path).isDirectory():
                it = fs.listFiles(path, True)
                found = []
                while it.hasNext():
                    name = str(it.next().getPath().toString())
                    if name.endswith(".parquet"):
                        found.append(name)
                if not found:
                    raise SchemaError(f"{text}: directory holds no *.parquet files")
                out.extend(sorted(found))
            else:
                out.append(text)
            continue
        p = Path(text)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.parquet") if f.is_file())
            if not files:
                raise SchemaError(f"{p}: directory holds no *.parquet files")
            out.extend(str(f) for f in files)
        elif p.is_file():
            out.append(str(p))
        else:
            raise SchemaError(f"{p}: no such file or directory")
    for f in out:
        if not f.lower().endswith((".parquet", ".pq")):
            raise SchemaError(
                f"{f}: the Spark engine reads Parquet logs; expected .parquet, found "
                f"{Path(f).suffix!r} (convert it, or use --engine local)"
            )
    return out


def column_names(spark: Any, files: Sequence[str], uris: Sequence[str]) -> list[str]:
    """The first file's columns; every file must have the same column set (local files: from
    their Parquet footers, without a Spark job per file)."""
    names: list[list[str]] = []
    for f, u in zip(files, uris, strict=True):
        if is_uri(f):
            names.append(list(spark.read.parquet(u).columns))
            continue
        try:
            names.append(list(pq.read_schema(f).names))
        except (OSError, pa.ArrowException) as exc:
            raise SchemaError(f"{f}: expected a Parquet file; found {exc}") from None
    first = names[0]
    for f, cols in zip(files[1:], names[1:], strict=True):
        if set(cols) != set(first):
            extra = sorted(set(cols) - set(first))
            missing = sorted(set(first) - set(cols))
            raise SchemaError(
                f"{f}: columns differ from {files[0]}: expected the same column set; found "
                f"extra {extra} and missing {missing}"
            )
    return first


def spark_uri(f: str) -> str:
    """The URI Spark reads ``f`` by."""
    return f if is_uri(f) else Path(f).resolve().as_uri()


def sha_parts_local(directory: Path) -> tuple[list[Path], str]:
    """The part files of a local ``transitions/`` directory and their :func:`hash_parts`."""
    parts = sorted(
        f
        for f in directory.iterdir()
        if f.suffix == ".parquet" and not f.name.startswith((".", "_"))
    )
    h = hashlib.sha256()
    for f in parts:
        fh = hashlib.sha256()
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                fh.update(block)
        h.update(fh.digest())
    return parts, "sha256:" + h.hexdigest()


def hash_parts(directory: str | Path) -> str:
    """``dataset_hash`` of a ``transitions/`` directory: sha256 over its parts' sha256 digests,
    in part-name order."""
    return sha_parts_local(Path(directory))[1]


def sha_parts_remote(spark: Any, uris: Sequence[str]) -> str:
    """:func:`hash_parts` of files at URIs (digests computed on the executors)."""
    digests = (
        spark.sparkContext.binaryFiles(",".join(uris))
        .mapValues(lambda b: hashlib.sha256(b).digest())
        .collect()
    )
    by_name = dict(digests)
    h = hashlib.sha256()
    for name in sorted(by_name, key=lambda u: u.rsplit("/", 1)[-1]):
        h.update(by_name[name])
    return "sha256:" + h.hexdigest()


def write_remote(spark: Any, out: str, writer: Any, reward: RewardConfig, documents: Any) -> str:
    """Write to a Hadoop-compatible URI: a temporary sibling directory, renamed at the end."""
    out = out.rstrip("/")
    tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    fs, tmp_path = hadoop_fs(spark, tmp)
    jvm = spark.sparkContext._jvm
    try:
        writer.parquet(f"{tmp}/transitions")
        it = fs.listStatus(jvm.org.apache.hadoop.fs.Path(f"{tmp}/transitions"))
        parts = [str(s.getPath().toString()) for s in it]
        parts = [p for p in parts if p.rsplit("/", 1)[-1].startswith("part-")]
        dataset_hash = sha_parts_remote(spark, parts)
        features_text, report_text = documents(dataset_hash)
        for name, text in (
            ("features.json", features_text),
            ("reward.toml", reward.to_toml()),
            ("report.json", report_text),
        ):
            stream = fs.create(jvm.org.apache.hadoop.fs.Path(f"{tmp}/{name}"), True)
            stream.write(bytearray(text.encode("utf-8")))
            stream.close()
        target = jvm.org.apache.hadoop.fs.Path(out)
        if fs.exists(target):
            fs.delete(target, True)
        if not fs.rename(tmp_path, target):
            raise SchemaError(f"{out}: could not move the finished dataset into place")
        return str(report_text)
    except BaseException:
        fs.delete(tmp_path, True)
        raise
