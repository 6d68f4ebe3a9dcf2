"""``ArchiveIndex``: the one Python entry point to build, update, open and search an image archive index.

An index directory holds ``index.sqlite`` (settings, model record, files, chips, vectors; see
:mod:`rsitr.index.store`) and a vector store derived from it (:mod:`rsitr.index.vector_store`). The model name, the
pretrained value and the embedding fingerprint are recorded at creation; opening or extending the
index with an encoder whose fingerprint differs is refused, because its vectors would not be
comparable with the stored ones. The CLI commands and the web service all go through this class.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from rsitr.deprecations import renamed
from rsitr.errors import RsitrWarning, UserError
from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS, RemoteFile, open_scene
from rsitr.index.compatibility import (check_encoder, checkpoint_record, merged_settings, recorded_checkpoint,
                                       refuse_another_model)
from rsitr.index.find_all import (DEFAULT_THRESHOLD, PREVALENCE_SAMPLE, Found, Probe, background_ids, fit_probe,
                                   prevalence, prior_excluded, score_batches, with_prevalence)
from rsitr.inference.encoder import EncodedText, Encoder, Fingerprint
from rsitr.index.export import wgs84_bounds
from rsitr.index.feedback import rocchio
from rsitr.index.handles import Handle, UnknownChipError, resolve_chip
from rsitr.index.heatmap import NotGeoreferencedError, SceneScores, score_raster
from rsitr.index.indexer import BuildOptions, ChipEncoder, IndexSettings, IndexSetupError, UpdateReport, update_index
from rsitr.index.sources import new_index_scale, open_archive
from rsitr.index.searcher import DEFAULT_RERANK_CANDIDATES, SearchHit, SearchResults, fused_scores, rank
from rsitr.index.store import DATABASE_NAME, ChipRecord, MetadataStore
from rsitr.index.tiling import Window
from rsitr.index.vector_store import (REBUILT_FILES, DamagedVectorsError, VectorStore, in_memory,
                                      resolve_index_type, vector_backend)
from rsitr.index.where import Where, matching_chips

SCORE_BATCH = 65_536
"""Chips scored per batch by :meth:`ArchiveIndex.find_all` (16 MiB of 256-dim float32 vectors)."""
WHERE_BATCH = 10_000
"""Chips scored per batch when a search is limited to an area or time span (fewer than SQLite's bound variables)."""
LOCK_NAME = "index.lock"
SCORE_TOLERANCE = 0.01
"""How far a saved vector store's cosine may be from the stored vector's (float16 re-scores of IVF-PQ, float32
sums in another order); a damaged file is off by far more."""


class SourceChangedError(FileNotFoundError):
    """An indexed image was deleted, replaced or became unreadable after it was indexed."""


@contextmanager
def _writing(directory: Path) -> Iterator[None]:
    """Hold the index's write lock (``index.lock``, an OS file lock, so a killed run leaves none held), or raise
    :class:`IndexSetupError` at once: two runs writing one index would collide on its rows."""
    from filelock import FileLock, Timeout

    lock = FileLock(directory / LOCK_NAME)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise IndexSetupError(f"another rsitr index is writing {directory}; wait until it ends, or pass another "
                              f"`directory`", parameters=("directory",)) from None
    try:
        yield
    finally:
        lock.release()


def _among(batches: Iterator[tuple[np.ndarray, np.ndarray]], allowed: np.ndarray
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(ids, vectors)`` batches cut to the ``allowed`` chip ids."""
    for ids, vectors in batches:
        keep = np.isin(ids, allowed)
        if keep.any():
            yield ids[keep], vectors[keep]


def _item_and_href(listed: RemoteFile | None) -> tuple[str | None, str | None]:
    """A remote raster's STAC item id and URL (a file of a folder: neither, its server path is never shown)."""
    return (None, None) if listed is None else (listed.item_id, listed.href)


class ArchiveIndex:
    """An opened index: search it by text or image, look up chips, render chip images."""

    def __init__(self, directory: Path, store: MetadataStore, encoder: Encoder) -> None:
        self.directory = Path(directory)
        self.store = store
        self.encoder = encoder
        self.root = Path(store.get_meta("root"))
        self.settings = IndexSettings.from_record(store.get_meta("settings"))
        self.archive = open_archive(self.root, self.settings.asset)
        self._lock = threading.Lock()
        self._backend = vector_backend(self.settings.backend, self.directory, self.settings.vector_uri)
        self._vectors_on_disk = False
        self._generation = -1
        self._saved_generation = None
        self._refresh_vectors()

    # -- opening and building -------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, *, encoder: Encoder | None = None, device: str = "cpu",
             checkpoint: str | Path | None = None, precision: str = "auto", runtime: str = "auto",
             pretrained: str | Path | None = None) -> ArchiveIndex:
        """Open an index; the encoder is loaded from the recorded model unless one is given (then it is checked).

        ``checkpoint`` points at the index's model checkpoint where it now lies (an index and its checkpoint
        moved to another machine); it is accepted only when its SHA-256 is the recorded one (``pretrained``: its
        deprecated spelling, see :mod:`rsitr.deprecations`). ``runtime``: where the
        encoder runs (:data:`rsitr.inference.encoder.RUNTIMES`); an index built on one runtime opens on the other.
        """
        checkpoint = renamed("ArchiveIndex.open", "pretrained", pretrained, checkpoint)
        store = MetadataStore(Path(directory), read_only=True)
        if store.get_meta("model") is None:
            raise IndexSetupError(f"{directory} holds no finished index setup; run `rsitr index` on it again")
        if encoder is None:
            source = recorded_checkpoint(store, Path(directory), checkpoint)
            encoder = Encoder.load(store.get_meta("model"), source, pretrained_sha256=store.get_meta("pretrained_sha256"),
                                   device=device, precision=precision, runtime=runtime)
        check_encoder(store, directory, encoder)
        return cls(Path(directory), store, encoder)

    @classmethod
    def build(cls, directory: str | Path, images: str | Path, model_name: str | None = None,
              pretrained: str | None = None, options: BuildOptions | None = None, *, encoder: Encoder | None = None,
              progress: bool = True, relocate: bool = False, rebuild: bool = False,
              chip_encoder: ChipEncoder | None = None) -> tuple[ArchiveIndex, UpdateReport]:
        """Create the index in ``directory`` for the images under ``images``, or bring an existing one up to date.

        ``options`` (:class:`BuildOptions`, the defaults when None) holds the settings asked for and how this run
        encodes (batch size, device, precision, runtime). Settings left as None there take the values recorded in
        an existing index, or the defaults of :class:`IndexSettings` for a new one; a model left as None, the
        index's, or the shipped default (:data:`rsitr.models.DEFAULT_PRETRAINED`, which
        :func:`~rsitr.models.create_model` loads when no model is named).
        Chip settings and the images folder cannot change once an index exists; ``index_type``, ``backend``
        (:data:`rsitr.index.vector_store.BACKENDS`), ``vector_uri`` (where its store lies) and the limits
        ``max_pixels`` (per scene) and ``max_chips_per_file`` (larger files are failures of the run) can, and
        ``bands``, ``scale`` and ``max_nodata`` say how a raster's chips are made RGB and which are left out as
        nodata (:class:`IndexSettings`); like the chip settings they cannot change. ``scale`` None on a new index:
        by STAC statistics where every asset gives them (:func:`~rsitr.index.sources.new_index_scale`), else
        percentiles; the index records which.
        ``relocate`` re-points the index at ``images`` when its folder moved (files are matched by their path
        relative to it, and by content where size or mtime differ, so nothing unchanged is encoded again).
        ``store_local_tokens`` None keeps a new index's patch tokens only when the model's scoring recipe re-ranks
        with them (``recipe.local``). ``rebuild`` discards the index's files (a damaged database) and builds anew. Every argument (and the
        model) is checked before anything is written, so a mistake leaves no half-made index behind.
        ``chip_encoder`` encodes the chips elsewhere (:func:`rsitr.index.chip_shards.build_index_with_ray`); the index is
        the same.
        """
        directory, images = Path(directory), Path(images).resolve()
        if not images.is_dir() and not images.is_file():
            raise IndexSetupError(f"image folder {images} does not exist or is not a directory (or a listing of "
                                  f"remote rasters)")
        if directory.exists() and not directory.is_dir():
            raise IndexSetupError(f"{directory} is a file, not an index folder; pass another `directory`",
                                  parameters=("directory",))
        options = options or BuildOptions()
        new_settings, requested = options.settings(), options.requested()
        opened = MetadataStore(directory) if (directory / DATABASE_NAME).is_file() and not rebuild else None
        # the store of an index whose setup finished (None: a new index, or one whose first run stopped before it)
        recorded = opened if opened is not None and opened.get_meta("model") is not None else None
        if recorded is not None:  # what the index records is checked before a model loads
            settings = merged_settings(recorded, directory, images, requested, relocate)
            if encoder is None:
                refuse_another_model(recorded, directory, model_name, pretrained)
        else:
            settings = new_settings
        archive = open_archive(images, settings.asset, settings.bands)  # a bad listing or --bands
        if recorded is None:
            settings = dataclasses.replace(settings, scale=new_index_scale(archive, requested["scale"]))
        if encoder is None:
            digest = None
            if recorded is not None:
                model_name = recorded.get_meta("model")
                pretrained = recorded_checkpoint(recorded, directory, pretrained)
                digest = recorded.get_meta("pretrained_sha256")
            encoder = Encoder.load(model_name, pretrained, pretrained_sha256=digest, device=options.device,
                                   precision=options.precision, runtime=options.runtime)
        if recorded is not None:
            check_encoder(recorded, directory, encoder)
        directory.mkdir(parents=True, exist_ok=True)
        with _writing(directory):
            if rebuild:
                for name in (DATABASE_NAME, f"{DATABASE_NAME}-wal", f"{DATABASE_NAME}-shm", *REBUILT_FILES):
                    (directory / name).unlink(missing_ok=True)
            store = opened or MetadataStore(directory)
            if recorded is None:
                # Patch tokens are kept only for a model that re-ranks with them (most of an index's bytes
                # otherwise); an explicit store_local_tokens forces either way.
                if options.store_local_tokens is None:
                    settings = dataclasses.replace(settings, store_local_tokens=encoder.recipe.local)
                store.set_meta(model=encoder.model_name, **checkpoint_record(encoder.pretrained, directory),
                               fingerprint=encoder.fingerprint().to_dict(), root=str(images),
                               settings=dataclasses.asdict(settings))
            else:
                store.set_meta(settings=dataclasses.asdict(settings), root=str(images))
            report = update_index(store, encoder, archive, settings, options.batch_size, progress, chip_encoder)
            index = cls(directory, store, encoder)
            index._save_vectors()
        return index, report

    def close(self) -> None:
        self.store.close()

    # -- the vector store ------------------------------------------------------------------------------------
    def _index_type(self) -> str:
        """The vector index type to hold: the setting, with ``auto`` chosen for the chips stored now."""
        return resolve_index_type(self.settings.index_type, self.store.chip_count())

    def _vectors_saved(self) -> bool:
        return self._backend.saved() and self.store.get_meta("vectors_generation") == self._generation and \
            self._backend.records(self.store.get_meta("vectors_type") or "", self._index_type())

    def _refresh_vectors(self) -> None:
        """Open the saved vector store if it matches the database and is sound, else build one from the stored
        vectors in memory (a damaged store is named in a warning: it is derived data, which `rsitr index`
        rewrites)."""
        self._generation = self.store.generation
        self._saved_generation = self.store.get_meta("vectors_generation")
        opened: VectorStore | None = None
        if self._vectors_saved():
            try:
                opened = self._backend.open(self.store, self.encoder.dim, self._index_type())
            except DamagedVectorsError as err:
                warnings.warn(f"{err}; searching its vectors rebuilt from {DATABASE_NAME} in memory (`rsitr index` on "
                              f"this index rewrites them)", RsitrWarning, stacklevel=2)
        self._vectors_on_disk = opened is not None
        self._vectors: VectorStore = opened if opened is not None else in_memory(self.store, self._index_type())

    def _save_vectors(self) -> None:
        """Write the vector store unless it was opened from a current, sound one (the backend tells, reading it
        whole where its opening checks less). Only writers (build) save; readers rebuild in memory."""
        if self._vectors_on_disk:
            self._vectors_on_disk = self._backend.sound(self._vectors, self.store)
        if not self._vectors_on_disk:
            self._vectors = self._backend.save(self.store, self._index_type(), self._vectors)
            self.store.set_meta(vectors_generation=self._generation,
                                vectors_type=self._backend.recorded_as(self._index_type()))
            self._vectors_on_disk = True

    def _current_vectors(self) -> VectorStore:
        """The vector store, reopened once an indexing run (possibly another process) has saved a newer one.

        Reloading on every committed batch would rebuild the index per query while a run is under way;
        chips deleted meanwhile are dropped from results by :meth:`_hits`.
        """
        with self._lock:
            if self.store.get_meta("vectors_generation") != self._saved_generation:
                self._refresh_vectors()
            return self._vectors

    # -- searching -------------------------------------------------------------------------------------------
    def search(self, query: str | None = None, k: int = 10, *, like: Handle | None = None,
               vector: np.ndarray | None = None, positive: Sequence[Handle] = (), negative: Sequence[Handle] = (),
               rerank: bool = True, candidates: int = DEFAULT_RERANK_CANDIDATES,
               remove_unwanted: bool = True, where: Where | None = None,
               image: np.ndarray | None = None) -> SearchResults:
        """Top ``k`` chips for a text ``query``, like the indexed chip ``like``, or like a query ``vector`` (a query
        image's embedding: :meth:`embed_image`), refined by relevance feedback. (``image``: ``vector``'s deprecated
        spelling; an image itself is :meth:`search_image`'s.)

        ``like`` starts from that chip's stored vector (nothing is re-encoded). ``positive`` / ``negative``
        chips (wanted / not wanted) move the query vector by Rocchio's formula
        (:func:`rsitr.index.feedback.rocchio`); marks alone, without a query, search from the wanted chips.
        Chips marked not wanted are left out of the results (``removed`` counts those that ranked among them),
        unless ``remove_unwanted`` is False (then only the query vector moves away from them).
        Text queries keep the local re-rank on their words, fused with the global cosine of the refined vector;
        the others rank by global cosine. Chips are named by id or path (:mod:`rsitr.index.handles`); unknown ones
        raise :class:`UnknownChipError`. ``where`` limits the results to an area and a span of acquisition times
        (:mod:`rsitr.index.where`) before they are ranked: only its chips are scored (exactly, from their stored
        vectors), so ``k`` come back while as many match.
        """
        vector = renamed("ArchiveIndex.search", "image", image, vector)
        like, positive, negative = self._resolved(like, positive, negative)
        vector, encoded = self._query_vector(query, like, vector, positive, negative)
        unwanted = frozenset(negative if remove_unwanted else ())
        rerank = rerank and encoded is not None and self.settings.store_local_tokens and self.encoder.recipe.local
        count = k + len(unwanted)
        count = max(count, candidates) if rerank else count
        allowed = self._allowed(where)
        ids, scores = self._candidates(vector, count) if allowed is None else \
            self._candidates_among(vector, allowed, count)
        tokens = self.store.tokens(ids.tolist(), self.encoder.dim) if rerank else None
        if encoded is None or tokens is None:  # no local re-rank (or no candidates)
            return self._hits(*rank(ids, scores, k, unwanted=unwanted))
        fused, local = fused_scores(scores, tokens, encoded, self.encoder.recipe)
        return self._hits(*rank(ids, scores, k, local, fused, unwanted))

    def _allowed(self, where: Where | None) -> np.ndarray | None:
        """The chip ids ``where`` lets through; None when it filters nothing."""
        return None if where is None or not where.active else matching_chips(self.store, where)

    def _candidates_among(self, embedding: np.ndarray, allowed: np.ndarray, count: int
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosines of the best ``count`` of the ``allowed`` chips, best first (ties by id), scored from their
        stored vectors :data:`WHERE_BATCH` at a time."""
        best_ids, best_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for start in range(0, len(allowed), WHERE_BATCH):
            stored = self.store.vectors(allowed[start:start + WHERE_BATCH].tolist())
            ids = np.fromiter(stored, dtype=np.int64, count=len(stored))
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, self._matrix(stored, ids.tolist()) @ embedding])
            if len(best_ids) > count:
                order = np.lexsort((best_ids, -best_scores))[:count]
                best_ids, best_scores = best_ids[order], best_scores[order]
        order = np.lexsort((best_ids, -best_scores))
        return best_ids[order], best_scores[order].astype(np.float32)

    def _resolved(self, like: Handle | None, positive: Sequence[Handle],
                  negative: Sequence[Handle]) -> tuple[int | None, list[int], list[int]]:
        """Chip ids of the handles (ids, or paths of indexed images: :func:`rsitr.index.handles.resolve_chip`)."""
        return (None if like is None else resolve_chip(self.store, like),
                [resolve_chip(self.store, handle) for handle in positive],
                [resolve_chip(self.store, handle) for handle in negative])

    def _query_vector(self, query: str | None, like: int | None, embedding: np.ndarray | None, positive: Sequence[int],
                      negative: Sequence[int]) -> tuple[np.ndarray, EncodedText | None]:
        """The unit vector a search starts from (refined by the marks) and the encoded text query (None if none);
        the arguments are checked first (:meth:`search` names the errors)."""
        if sum(given is not None for given in (query, like, embedding)) > 1:
            raise UserError("give one of a text query, a chip to search like or a query image, not both")
        if query is not None and not query.strip():
            raise UserError("the text query is empty")
        marked = [*([] if like is None else [like]), *positive, *negative]
        stored = self.store.vectors(marked)
        missing = sorted(set(marked) - set(stored))
        if missing:
            raise UnknownChipError(f"no chip {', '.join(map(str, missing))} in this index; chip ids come from "
                                   f"search results")
        encoded = None if query is None else self.encoder.encode_text(query)
        start = encoded.embedding if encoded is not None else stored[like] if like is not None else embedding
        if positive or (negative and start is not None):  # unwanted chips alone are no query
            return rocchio(start, self._matrix(stored, positive), self._matrix(stored, negative)), encoded
        if start is None:
            raise UserError("nothing to search for: give a text query, a chip to search like, or wanted chips")
        return start, encoded

    def _matrix(self, stored: dict[int, np.ndarray], ids: Sequence[int]) -> np.ndarray:
        return np.stack([stored[i] for i in ids]) if ids else np.zeros((0, self.encoder.dim), np.float32)

    def probe(self, query: str | None = None, *, like: Handle | None = None, vector: np.ndarray | None = None,
              positive: Sequence[Handle] = (), negative: Sequence[Handle] = (), seed: int = 0,
              image: np.ndarray | None = None) -> Probe:
        """The calibrated linear probe of "find all like these", fitted on the marks (at least one ``positive``);
        ``negative`` chips and the query (text, ``like`` or ``vector``; ``image`` its deprecated spelling) are priors; a calibrated probe's odds are then those of the archive (the
        share of wanted chips estimated on a uniform sample of it: :func:`rsitr.index.find_all.prevalence`)."""
        vector = renamed("ArchiveIndex.probe", "image", image, vector)
        if not positive:
            raise UserError("finding all like these needs at least one chip marked wanted (`positive`)",
                            parameters=("positive",))
        like, positive, negative = self._resolved(like, positive, negative)
        prior, _ = self._query_vector(query, like, vector, positive, negative)
        marked = {*positive, *negative}
        excluded = prior_excluded(self.store.chip_count())
        likely = self._candidates(prior, excluded)[0].tolist() if excluded else []
        background = background_ids(self.store.chip_ids(), marked | set(likely), seed=seed).tolist()
        if not negative and not background:  # the prior's likely chips are all that is unmarked: they are the negatives
            background = background_ids(self.store.chip_ids(), marked, seed=seed).tolist()
        if not negative and not background:
            raise UserError(f"every chip of the index ({len(marked)}) is marked wanted: finding all like these needs "
                            f"chips left unmarked or marked not wanted to tell them from")
        stored = self.store.vectors([*marked, *background])
        probe = fit_probe(self._matrix(stored, positive), self._matrix(stored, negative),
                          self._matrix(stored, background), seed)
        if not probe.calibrated:
            return probe
        sample = background_ids(self.store.chip_ids(), (), PREVALENCE_SAMPLE, seed + 1).tolist()
        return with_prevalence(probe, prevalence(probe.logits(self._matrix(self.store.vectors(sample), sample))))

    def find_all(self, query: str | None = None, *, like: Handle | None = None, vector: np.ndarray | None = None,
                 positive: Sequence[Handle] = (), negative: Sequence[Handle] = (), threshold: float = DEFAULT_THRESHOLD,
                 batch_size: int = SCORE_BATCH, seed: int = 0, where: Where | None = None,
                 image: np.ndarray | None = None) -> Found:
        """Every chip of the index like the ``positive`` (wanted) chips: :meth:`probe` run over all chips in
        batches of ``batch_size`` from the vector store (:meth:`VectorStore.batches`), or over those ``where`` lets
        through (an area and a span of acquisition times: :mod:`rsitr.index.where`). Returns the chips whose
        probability is at least ``threshold``, most probable first, and their count; :meth:`found_hits` turns a
        page of them into hits. (``image``: ``vector``'s deprecated spelling.)"""
        vector = renamed("ArchiveIndex.find_all", "image", image, vector)
        if not 0 < threshold < 1:
            raise UserError(f"the probability threshold must lie between 0 and 1 (exclusive), got {threshold}")
        if batch_size < 1:
            raise UserError(f"the batch size must be at least 1, got {batch_size}")
        probe = self.probe(query, like=like, vector=vector, positive=positive, negative=negative, seed=seed)
        allowed = self._allowed(where)
        batches = self._current_vectors().batches(batch_size)
        return score_batches(probe, batches if allowed is None else _among(batches, allowed), threshold)

    def found_hits(self, found: Found, offset: int = 0, limit: int | None = None) -> SearchResults:
        """Hits for ``found``'s chips ``offset`` to ``offset + limit`` (all from ``offset`` if None), in its order;
        ``score`` and ``global_score`` are the probe's probability, ``local_score`` None."""
        end = len(found.ids) if limit is None else offset + limit
        return self._hits([(int(chip_id), float(p), float(p), None)
                           for chip_id, p in zip(found.ids[offset:end], found.probabilities[offset:end])])

    def scene_scores(self, path: str, query: str | None = None, *, like: Handle | None = None,
                     vector: np.ndarray | None = None, positive: Sequence[Handle] = (),
                     negative: Sequence[Handle] = (), find_all: bool = False, seed: int = 0,
                     image: np.ndarray | None = None) -> SceneScores:
        """The score of every chip of the indexed image ``path`` for a query, as the results rank it: the
        :meth:`probe`'s probability with ``find_all``, else the fused score of a text search that re-ranks
        locally, else the global cosine of the (refined) query vector. Raises FileNotFoundError (an image that is
        not indexed, or a path outside the archive) and :class:`NotGeoreferencedError` (no coordinates).
        (``image``: ``vector``'s deprecated spelling.)"""
        vector = renamed("ArchiveIndex.scene_scores", "image", image, vector)
        self.archive.source(path)
        record = self.store.file(path)
        if record is None or not record.complete:
            raise FileNotFoundError(f"{path} is not an indexed image")
        ids = self.store.chips_of(path)
        records = self.store.chips(ids)
        crs = records[ids[0]].crs if ids else None
        if crs is None:
            raise NotGeoreferencedError(f"{path} is not georeferenced: a heat map needs a GeoTIFF scene")
        vectors = self._matrix(self.store.vectors(ids), ids)
        if find_all:
            probe = self.probe(query, like=like, vector=vector, positive=positive, negative=negative, seed=seed)
            scores, kind = probe.probabilities(vectors), "probability"
        else:
            like, positive, negative = self._resolved(like, positive, negative)
            query_vector, encoded = self._query_vector(query, like, vector, positive, negative)
            scores, kind = (vectors @ query_vector).astype(np.float32), "cosine"
            tokens = self.store.tokens(ids, self.encoder.dim) if self.settings.store_local_tokens and \
                self.encoder.recipe.local else None
            if encoded is not None and tokens is not None:
                scores, kind = fused_scores(scores, tokens, encoded, self.encoder.recipe)[0], "fused"
        return SceneScores(path, crs, ids, [records[i].window for i in ids], [records[i].bounds for i in ids],
                           scores, kind)

    def score_raster(self, scores: SceneScores) -> bytes:
        """``scores`` as a GeoTIFF over their scene (:func:`rsitr.index.heatmap.score_raster`): cells of the chips'
        stride, the scene's CRS and transform."""
        stride = self.settings.chip_size - self.settings.chip_overlap
        self._read_source(scores.path, lambda scene: None)  # refuses a scene changed since it was indexed
        return score_raster(scores, self.archive.source(scores.path), stride)

    def embed_image(self, image: str | Path | Image.Image,
                    max_pixels: int | None = DEFAULT_MAX_QUERY_PIXELS) -> np.ndarray:
        """The unit embedding ``[D]`` of a query image (a PIL image or a path to a supported file), to search
        with (``search(vector=...)``).

        A file whose header declares more than ``max_pixels`` pixels is refused before it is decoded
        (:class:`rsitr.index.archive.ImageTooLargeError`)."""
        if not isinstance(image, Image.Image):
            with open_scene(Path(image), max_pixels, self.settings.rendering) as scene:
                image = scene.read(Window(0, 0, scene.width, scene.height))
        return self.encoder.encode_images([image], self.settings.orientations).embeddings[0]

    def search_image(self, image: str | Path | Image.Image, k: int = 10,
                     max_pixels: int | None = DEFAULT_MAX_QUERY_PIXELS, where: Where | None = None) -> SearchResults:
        """Top ``k`` chips by global cosine to a query image (see :meth:`embed_image`), of those ``where`` lets
        through."""
        return self.search(k=k, vector=self.embed_image(image, max_pixels), where=where)

    def _candidates(self, embedding: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosines of the best ``count`` chips, checked against the stored vectors (the record): a saved
        vector store whose answer is unreadable or disagrees with them (a damaged file: scores of 1e28, ids of
        no chip) is replaced, with a warning, by one built from the stored vectors in memory."""
        vectors = self._current_vectors()
        try:
            return self._checked(*vectors.search(embedding, count), embedding)
        except (OSError, ValueError, RuntimeError, TypeError) as err:  # what the backends raise on bad files
            if not self._vectors_on_disk:
                raise
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            warnings.warn(f"the saved vectors at {self._backend.location} are damaged ({reason}); searching its vectors "
                          f"rebuilt from {DATABASE_NAME} in memory (`rsitr index` on this index rewrites them)",
                          RsitrWarning, stacklevel=2)
            with self._lock:
                self._vectors = in_memory(self.store, self._index_type())
                self._vectors_on_disk = False
            return self._candidates(embedding, count)

    def _checked(self, ids: np.ndarray, scores: np.ndarray, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates that are chips of the index (others were deleted by a run under way), after checking
        that their scores are the cosines of their stored vectors (:class:`DamagedVectorsError` if not)."""
        stored = self.store.vectors(ids.tolist())
        keep = np.array([int(chip_id) in stored for chip_id in ids], dtype=bool)
        if not keep.all() and self.store.generation == self._saved_generation:  # no run since they were saved
            raise DamagedVectorsError(f"chip id {int(ids[~keep][0])} is no chip of the index")
        ids, scores = ids[keep], scores[keep]
        expected = np.array([stored[int(chip_id)] @ embedding for chip_id in ids], dtype=np.float32)
        if not np.all(np.isfinite(scores)) or np.any(np.abs(scores - expected) > SCORE_TOLERANCE):
            worst = int(np.argmax(np.where(np.isfinite(scores), np.abs(scores - expected), np.inf)))
            raise DamagedVectorsError(f"chip {int(ids[worst])} scored {float(scores[worst]):.6g}, "
                                                   f"its stored vector {float(expected[worst]):.6g}")
        return ids, scores

    def _hits(self, ranked: list[tuple[int, float, float, float | None]], removed: int = 0) -> SearchResults:
        records = self.store.chips([chip_id for chip_id, *_ in ranked])
        changes = {record.path: self._source_change(record.path, record.source_stat) for record in records.values()}
        listed = {path: self.archive.listed(path) for path in changes}
        return SearchResults([SearchHit(chip_id, record.path, record.window, record.bounds, record.crs, score,
                                        global_score, local_score, changes[record.path] is not None,
                                        record.whole_image, record.acquired,
                                        *_item_and_href(listed[record.path]))
                              for chip_id, score, global_score, local_score in ranked
                              if (record := records.get(chip_id)) is not None], removed)

    # -- chips and files ---------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """How often the index was updated: it changes with every indexing run (so what was rendered from an
        earlier state, e.g. a cached thumbnail, can be told apart)."""
        return self.store.generation

    def chip(self, chip_id: int) -> ChipRecord | None:
        return self.store.chips([chip_id]).get(chip_id)

    def chip_image(self, chip: ChipRecord, max_side: int | None = None) -> Image.Image:
        """The chip's pixels, read from its image in the archive (downscaled to ``max_side`` if given).

        Raises :class:`SourceChangedError` when the image was deleted, replaced or became unreadable since it
        was indexed."""
        return self._read_source(chip.path, lambda scene: scene.read(chip.window, max_side))

    def file_preview(self, path: str, max_side: int) -> Image.Image:
        """A whole indexed image, downscaled. Raises PathOutsideArchiveError for paths escaping the archive,
        FileNotFoundError for files that are not (completely) indexed and :class:`SourceChangedError` for
        indexed files deleted or replaced since."""
        self.archive.source(path)
        record = self.store.file(path)
        if record is None or not record.complete:
            raise FileNotFoundError(f"{path} is not an indexed image")
        return self._read_source(path, lambda scene: scene.read(Window(0, 0, scene.width, scene.height), max_side))

    def _source_change(self, path: str, indexed_stat: tuple[int, int] | None) -> str | None:
        """How the image ``path`` changed since it was indexed with ``(size, mtime_ns)`` (None: not indexed):
        ``"deleted or moved"``, ``"replaced"``, or None when it is still the file that was indexed. Size and mtime
        decide, as in :mod:`rsitr.index.indexer`."""
        stat = self.archive.stat(path)
        if stat is None:
            return "deleted or moved"
        return None if indexed_stat == stat else "replaced"

    def _read_source(self, path: str, read) -> Image.Image:
        """``read(scene)`` on the indexed image ``path``, if it is still the file that was indexed.

        Messages name the path relative to the archive (and the archive folder by name) only, since they reach
        web clients."""
        record = self.store.file(path)
        change = self._source_change(path, None if record is None else (record.size, record.mtime_ns))
        if change is not None:
            fix = "run `rsitr index` again" if self.archive.exists() else \
                f"the images folder {self.root.name!r} is gone: if it moved, run `rsitr index NEW_FOLDER " \
                f"--out INDEX --relocate`"
            raise SourceChangedError(f"{path} was {change} since it was indexed; {fix}")
        try:
            with open_scene(self.archive.source(path),
                            rendering=self.settings.rendering.for_file(self.archive.listed(path))) as scene:
                return read(scene)
        except Exception as err:  # decoders raise many types
            raise SourceChangedError(f"{path} can no longer be read ({type(err).__name__}); "
                                     f"run `rsitr index` again") from None

    def chip_details(self, chip_id: int) -> dict | None:
        """A chip's file, window, bounds (native and WGS84), CRS, its scene's pixel size, acquisition time and (a
        remote raster) STAC item id and URL; None if unknown."""
        record = self.chip(chip_id)
        if record is None:
            return None
        width, height = self.store.scene_size(record.path) or (None, None)
        item_id, href = _item_and_href(self.archive.listed(record.path))
        return {"chip_id": record.id, "path": record.path, "window": dataclasses.asdict(record.window),
                "bounds": record.bounds, "crs": record.crs, "wgs84_bounds": wgs84_bounds(record.bounds, record.crs),
                "scene": {"width": width, "height": height}, "acquired": record.acquired, "item_id": item_id,
                "href": href}

    def info(self) -> dict:
        """The index summary; ``incomplete_files`` > 0 while an indexing run is under way (or was interrupted);
        ``index_type`` the vector index searched now (``auto`` resolved for the chips stored); ``local_rerank``
        whether text searches re-rank by local (patch-word) similarity: the model was trained with it and the index
        stores patch tokens; ``fusion`` the weights of that fused score (global cosine and local similarity);
        ``georeferenced_files`` how many images have coordinates (none: the page shows no map)."""
        fingerprint = Fingerprint.from_dict(self.store.get_meta("fingerprint"))
        pretrained = self.store.get_meta("pretrained")
        if pretrained and (self.store.get_meta("pretrained_sha256") or Path(pretrained).is_absolute()):
            pretrained = Path(pretrained).name  # a checkpoint file: by name only, never a server path
        files = self.store.files()
        return {"name": self.directory.resolve().name, "model": self.store.get_meta("model"),
                "pretrained": pretrained,
                "embedding_dim": fingerprint.dim, "fingerprint": fingerprint.digest, "root": self.archive.name,
                "settings": dataclasses.asdict(self.settings), "files": len(files),
                "incomplete_files": sum(not record.complete for record in files.values()),
                "chips": self.store.chip_count(), "failures": len(self.store.failures()),
                "index_type": self._index_type(), "georeferenced_files": self.store.georeferenced_files(),
                "local_rerank": self.settings.store_local_tokens and self.encoder.recipe.local,
                "fusion": {"global_weight": self.encoder.recipe.global_weight,
                           "local_weight": self.encoder.recipe.local_weight}}
