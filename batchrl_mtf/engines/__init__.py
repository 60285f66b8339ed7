"""Dataset-building engines: the shared per-part code (:mod:`.core`) and Apache Spark (:mod:`.spark`).

The local engine is :func:`batchrl_mtf.dataset.build_dataset`; the Spark engine,
:func:`batchrl_mtf.engines.spark.build_dataset_spark`, needs the ``spark`` extra and is imported
only when used. See ``docs/scale.md``.
"""
