"""``ArchiveIndex``: the one Python entry point to build, update, open and search an image archive index.

An index directory holds ``index.sqlite`` (settings, model record, files, chips, vectors; see
:mod:`rsitr.index.store`) and ``vectors.faiss``, a FAISS index derived from it. The model name, the
pretrained value and the embedding fingerprint are recorded at creation; opening or extending the
index with an encoder whose fingerprint differs is refused, because its vectors would not be
comparable with the stored ones. The CLI commands and the web service all go through this class.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from rsitr.retrieval import vector_index
from rsitr.index.archive import open_scene, resolve_in_root
from rsitr.index.encoder import Encoder, Fingerprint
from rsitr.index.indexer import IndexSettings, UpdateReport, update_index
from rsitr.index.searcher import DEFAULT_RERANK_CANDIDATES, SearchHit, fused_scores, rank
from rsitr.index.store import ChipRecord, MetadataStore
from rsitr.index.tiling import Window

VECTORS_NAME = "vectors.faiss"


class IndexCompatibilityError(ValueError):
    """The index was built with another model or other chip settings than the ones requested."""


def _describe(model_name: str, pretrained: str | None, fingerprint: Fingerprint) -> str:
    return (f"model {model_name!r} (pretrained {pretrained!r}, embedding dim {fingerprint.dim}, "
            f"fingerprint {fingerprint.digest})")


class ArchiveIndex:
    """An opened index: search it by text or image, look up chips, render chip images."""

    def __init__(self, directory: Path, store: MetadataStore, encoder: Encoder) -> None:
        self.directory = Path(directory)
        self.store = store
        self.encoder = encoder
        self.root = Path(store.get_meta("root"))
        self.settings = IndexSettings(**store.get_meta("settings"))
        self._lock = threading.Lock()
        self._vectors: faiss.Index | None = None
        self._generation = -1
        self._saved_generation = None
        self._refresh_vectors()

    # -- opening and building -------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, *, encoder: Encoder | None = None, device: str = "cpu",
             precision: str = "auto") -> ArchiveIndex:
        """Open an index; the encoder is loaded from the recorded model unless one is given (then it is checked)."""
        store = MetadataStore(Path(directory), read_only=True)
        if store.get_meta("model") is None:
            raise FileNotFoundError(f"{directory} holds no finished index setup; run `rsitr index` on it again")
        if encoder is None:
            encoder = Encoder.load(store.get_meta("model"), store.get_meta("pretrained"), device, precision)
        cls._check_encoder(store, directory, encoder)
        return cls(Path(directory), store, encoder)

    @classmethod
    def build(cls, directory: str | Path, images: str | Path, model_name: str | None = None,
              pretrained: str | None = None, *, encoder: Encoder | None = None, chip_size: int | None = None,
              chip_overlap: int | None = None, tile_larger_than: int | None = None, index_type: str | None = None,
              store_local_tokens: bool | None = None, batch_size: int = 32, progress: bool = True,
              device: str = "cpu", precision: str = "auto") -> tuple[ArchiveIndex, UpdateReport]:
        """Create the index in ``directory`` for the images under ``images``, or bring an existing one up to date.

        Arguments left as None take the values recorded in an existing index, or the defaults of
        :class:`IndexSettings` for a new one; a new index needs ``model_name`` (or ``encoder``).
        Chip settings and the images folder cannot change once an index exists; ``index_type`` can.
        """
        directory, images = Path(directory), Path(images).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        store = MetadataStore(directory)
        stored_model = store.get_meta("model")
        requested = {"chip_size": chip_size, "chip_overlap": chip_overlap, "tile_larger_than": tile_larger_than,
                     "index_type": index_type, "store_local_tokens": store_local_tokens}
        if index_type is not None and index_type not in vector_index.INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(vector_index.INDEX_TYPES)}")
        if encoder is None:
            if model_name is None and stored_model is None:
                raise ValueError(f"{directory} is a new index: name the model to encode with (--model)")
            if model_name is None:
                model_name, pretrained = stored_model, store.get_meta("pretrained")
            encoder = Encoder.load(model_name, pretrained, device, precision)
        if stored_model is None:
            settings = IndexSettings(**{k: v for k, v in requested.items() if v is not None})
            store.set_meta(model=encoder.model_name, pretrained=encoder.pretrained,
                           fingerprint=encoder.fingerprint().to_dict(), root=str(images),
                           settings=dataclasses.asdict(settings))
        else:
            cls._check_encoder(store, directory, encoder)
            settings = cls._merged_settings(store, directory, images, requested)
            store.set_meta(settings=dataclasses.asdict(settings))
        report = update_index(store, encoder, images, settings, batch_size, progress)
        index = cls(directory, store, encoder)
        index._save_vectors()
        return index, report

    @staticmethod
    def _check_encoder(store: MetadataStore, directory: str | Path, encoder: Encoder) -> None:
        recorded = Fingerprint.from_dict(store.get_meta("fingerprint"))
        given = encoder.fingerprint()
        if not recorded.matches(given):
            built_with = _describe(store.get_meta("model"), store.get_meta("pretrained"), recorded)
            raise IndexCompatibilityError(
                f"index {directory} was built with {built_with} "
                f"but {_describe(encoder.model_name, encoder.pretrained, given)} was given; its embeddings are not "
                f"comparable. Use the recorded model, or build a new index in another directory.")

    @staticmethod
    def _merged_settings(store: MetadataStore, directory: Path, images: Path, requested: dict) -> IndexSettings:
        if Path(store.get_meta("root")) != images:
            raise IndexCompatibilityError(f"index {directory} covers {store.get_meta('root')}, not {images}; "
                                          f"build a new index in another directory for another folder")
        recorded = store.get_meta("settings")
        for key, value in requested.items():
            if value is not None and key != "index_type" and value != recorded[key]:
                raise IndexCompatibilityError(
                    f"index {directory} was built with {key}={recorded[key]!r}, not {value!r}; chip settings "
                    f"cannot change in place: build a new index in another directory")
        if requested["index_type"] is not None:
            recorded["index_type"] = requested["index_type"]
        return IndexSettings(**recorded)

    def close(self) -> None:
        self.store.close()

    # -- the FAISS index ---------------------------------------------------------------------------------------
    def _vectors_saved(self) -> bool:
        return (self.directory / VECTORS_NAME).is_file() and \
            self.store.get_meta("vectors_generation") == self._generation and \
            self.store.get_meta("vectors_type") == self.settings.index_type

    def _refresh_vectors(self) -> None:
        """Load the saved FAISS index if it matches the database, else rebuild it in memory from the stored vectors."""
        self._generation = self.store.generation
        self._saved_generation = self.store.get_meta("vectors_generation")
        if self._vectors_saved():
            self._vectors = vector_index.load(self.directory / VECTORS_NAME)
        else:
            ids, vectors = self.store.embeddings()
            self._vectors = vector_index.build_vector_index(vectors, ids, self.settings.index_type)

    def _save_vectors(self) -> None:
        """Write the FAISS index if the saved one is stale. Only writers (build) save; readers rebuild in memory."""
        if not self._vectors_saved():
            vector_index.save_atomic(self._vectors, self.directory / VECTORS_NAME)
            self.store.set_meta(vectors_generation=self._generation, vectors_type=self.settings.index_type)

    def _current_vectors(self) -> faiss.Index:
        """The FAISS index, reloaded once an indexing run (possibly another process) has saved a newer one.

        Reloading on every committed batch would rebuild the index per query while a run is under way;
        chips deleted meanwhile are dropped from results by :meth:`_hits`.
        """
        with self._lock:
            if self.store.get_meta("vectors_generation") != self._saved_generation:
                self._refresh_vectors()
            return self._vectors

    # -- searching -------------------------------------------------------------------------------------------
    def search_text(self, query: str, k: int = 10, rerank: bool = True,
                    candidates: int = DEFAULT_RERANK_CANDIDATES) -> list[SearchHit]:
        """Top ``k`` chips for a caption; with ``rerank`` the best ``max(k, candidates)`` by global cosine are
        re-ranked with local similarity (when the index stores local tokens)."""
        if not query.strip():
            raise ValueError("the text query is empty")
        encoded = self.encoder.encode_text(query)
        rerank = rerank and self.settings.store_local_tokens
        ids, scores = self._candidates(encoded.embedding, max(k, candidates) if rerank else k)
        if not rerank or not len(ids):
            return self._hits(rank(ids, scores, k))
        tokens = self.store.tokens(ids.tolist(), self.encoder.dim)
        fused, local = fused_scores(scores, tokens, encoded)
        return self._hits(rank(ids, scores, k, local, fused))

    def search_image(self, image: str | Path | Image.Image, k: int = 10) -> list[SearchHit]:
        """Top ``k`` chips by global cosine to a query image (a PIL image or a path to a supported file)."""
        if not isinstance(image, Image.Image):
            with open_scene(Path(image)) as scene:
                image = scene.read(Window(0, 0, scene.width, scene.height))
        embedding = self.encoder.encode_images([image]).embeddings[0]
        ids, scores = self._candidates(embedding, k)
        return self._hits(rank(ids, scores, k))

    def _candidates(self, embedding: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = vector_index.search_vectors(self._current_vectors(), embedding[None], count)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def _hits(self, ranked: list[tuple[int, float, float, float | None]]) -> list[SearchHit]:
        records = self.store.chips([chip_id for chip_id, *_ in ranked])
        return [SearchHit(chip_id, records[chip_id].path, records[chip_id].window, records[chip_id].bounds,
                          records[chip_id].crs, score, global_score, local_score)
                for chip_id, score, global_score, local_score in ranked if chip_id in records]

    # -- chips and files ---------------------------------------------------------------------------------------
    def chip(self, chip_id: int) -> ChipRecord | None:
        return self.store.chips([chip_id]).get(chip_id)

    def chip_image(self, chip: ChipRecord, max_side: int | None = None) -> Image.Image:
        """The chip's pixels, read from its image in the archive (downscaled to ``max_side`` if given)."""
        with open_scene(resolve_in_root(self.root, chip.path)) as scene:
            return scene.read(chip.window, max_side)

    def file_preview(self, path: str, max_side: int) -> Image.Image:
        """A whole indexed image, downscaled. Raises PathOutsideArchiveError for paths escaping the archive and
        FileNotFoundError for files that are not (completely) indexed."""
        full = resolve_in_root(self.root, path)
        record = self.store.file(path)
        if record is None or not record.complete:
            raise FileNotFoundError(f"{path} is not an indexed image")
        with open_scene(full) as scene:
            return scene.read(Window(0, 0, scene.width, scene.height), max_side)

    def info(self) -> dict:
        fingerprint = Fingerprint.from_dict(self.store.get_meta("fingerprint"))
        return {"model": self.store.get_meta("model"), "pretrained": self.store.get_meta("pretrained"),
                "embedding_dim": fingerprint.dim, "fingerprint": fingerprint.digest, "root": str(self.root),
                "settings": dataclasses.asdict(self.settings), "files": len(self.store.files()),
                "chips": self.store.chip_count(), "failures": len(self.store.failures())}
