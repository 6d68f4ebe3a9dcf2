"""The encode pipeline, after clip-retrieval's ``clip_inference``: reader -> encoder (the mapper: the model lives
here) -> writer, with distributors that run the writing workers. One home for what turns images and texts into
vectors in batches:

- :mod:`.encoder`: :class:`~rsitr.inference.encoder.Encoder`, a model's towers on a runtime (PyTorch or ONNX
  Runtime, without torch), and the fingerprint an index or a shard folder records;
- :mod:`.views` and :mod:`.images`: the one image-encoding step (orientation averaging) and the one batch loop over
  image files that ``rsitr eval``, ``embed`` and ``classify`` run; the index's chips take the same step through the
  encoder (its reader and writers are the index's: :mod:`rsitr.index.chips`, :mod:`rsitr.index.chip_shards`);
- :mod:`.shards`, :mod:`.columns`: resumable folders of Parquet shards and vectors as Arrow columns;
- :mod:`.distributors`: in-process, or a Ray actor pool (Ray imported only when it runs);
- :mod:`.embed`: ``rsitr embed`` (inputs read, shards written, read back).

It sits above ``models`` and ``data`` and below ``evaluate``, ``training``, ``index`` and ``api``, which all use it
(docs/ARCHITECTURE.md).
"""
