"""Caption files to :class:`CaptionCorpus`: Karpathy JSON (RSICD, RSITMD), NWPU-Captions JSON and CSV.

CSV comes in two layouts: ``filepath,caption[,split][,scene]`` and ``filename,title[,split]``, the layout of
the EBAKER / iEBAKER reference code's files (one file per split, e.g. ``rsicd_test.csv``). Both have one row
per caption. A file name that does not exist under the image folder (in the wild, often an absolute path
from the author's machine) is looked up by its base name in the image folder.

Every entry is checked while loading (keys, captions, split, image file exists) so a bad file fails at
once with a :class:`DataError` naming the file, the entry and the fix, not hours into training.
Opening the images is left to the datasets (and ``verify_images``): it is too slow to do for every load.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Callable, Iterator

from rsitr.data.errors import DataError
from rsitr.data.records import SPLIT_ALIASES, CaptionCorpus, ImageRecord, random_splits
from rsitr.errors import RsitrWarning
from rsitr.paths import regular_file

LAYOUTS = ("karpathy", "nwpu", "csv")
EXPECTED_CAPTIONS = 5
CSV_COLUMNS = ("filepath", "caption", "split", "scene")
# The reference code's names for the first two columns (its files have no split or scene column).
CSV_COLUMN_ALIASES = {"filename": "filepath", "title": "caption"}
DEFAULT_SPLIT = "test"
_LAYOUT_HELP = ('use a Karpathy JSON {"images": [{"filename", "split", "sentences": [{"raw"}, ...]}, ...]}, '
                'an NWPU-Captions JSON {"<scene>": [{"filename", "split", "raw", "raw_1", ...}, ...], ...} '
                'or a CSV with header filepath,caption[,split][,scene] (or filename,title[,split])')
_TRAILING_NUMBER = re.compile(r"_?\d+$")
_SPLIT_IN_NAME = re.compile(r"(?:^|[_\-.])(train|val|validation|test)(?:$|[_\-.])")
_NWPU_CAPTION_KEY = re.compile(r"raw(?:_(\d+))?")
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
"""Characters no image path of a dataset holds: C0 controls, DEL and unpaired surrogates (JSON's ``\\ud800``)."""
MAX_CSV_FIELD = 2**20
"""Longest CSV field read (characters): far over any caption, and a bound on what an unclosed quote swallows."""


@dataclass
class _Entry:
    """One image as read from a caption file, before splits are settled."""

    where: str
    path: Path
    captions: list[str]
    split: str | None
    scene: str | None


def scene_from_filename(filename: str) -> str | None:
    """Scene class from an RSICD / RSITMD file name: the stem before a trailing ``_<digits>`` or digits.

    ``airport_12.jpg`` -> ``airport``, ``denseresidential34.jpg`` -> ``denseresidential``, ``00001.jpg`` -> None.
    """
    stem = _TRAILING_NUMBER.sub("", Path(filename).stem)
    return stem.lower() if any(char.isalpha() for char in stem) else None


def load_corpus(path: str | Path, images_root: str | Path, name: str | None = None, fmt: str = "auto",
                seed: int = 0, strict: bool = False, split: str | None = None, check: bool = True) -> CaptionCorpus:
    """Load a caption file; ``fmt`` is ``auto`` (by suffix and JSON keys) or one of :data:`LAYOUTS`.

    ``name`` defaults to the file stem without a ``dataset_`` prefix (``dataset_rsicd.json`` -> ``rsicd``)
    and becomes each record's ``source``. Files without splits get a seeded 80/10/10 split by image, except
    the reference code's ``filename,title`` CSV: its rows take ``split``, else the split named in the file
    name (``rsicd_test.csv`` -> test), else "test".
    Empty captions are dropped with one warning that counts them (``strict`` refuses them instead); an
    image left without captions is dropped too.

    ``check=False`` reads the file as it is, for ``rsitr data inspect`` which counts the problems instead:
    empty captions are kept (as ``""``), image files need not exist, and nothing is warned about.
    """
    path, images_root = Path(path), Path(images_root)
    dropped: list[str] = []
    clean = functools.partial(_clean_captions, strict=strict, dropped=dropped, keep_empty=not check)
    find = functools.partial(_existing_image, images_root=images_root, required=check)
    if fmt not in ("auto", *LAYOUTS):
        raise ValueError(f"unknown caption file format {fmt!r}; choose auto or one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise DataError("caption file not found", path=path, fix="check the path (and the current directory)")
    regular_file(path, "caption file")  # a FIFO would block the reader
    if not images_root.is_dir():
        raise DataError("image folder not found", path=images_root,
                        fix=f"pass the folder the image names of {path} are relative to (`images_root`)",
                        parameters=("images_root",))
    if fmt == "csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
        entries = _csv_entries(path, clean, find, SPLIT_ALIASES.get(split or "") or _split_from_name(path))
    else:
        data = _read_json(path)
        layout = _json_layout(path, data) if fmt == "auto" else fmt
        if layout == "csv":
            raise DataError("is JSON, not CSV", path=path, fix="pass fmt='auto' or the JSON layout")
        parse = _karpathy_entries if layout == "karpathy" else _nwpu_entries
        entries = list(parse(path, data, clean, find))
    entries = _drop_empty(path, entries, dropped)
    if not entries:
        raise DataError("holds no images", path=path, fix=_LAYOUT_HELP)
    _settle_splits(path, entries, seed)
    if check:
        _warn_unusual_caption_counts(path, entries)
    source = name or _default_name(path)
    return CaptionCorpus(source, [ImageRecord(e.path, tuple(e.captions), e.split or "", e.scene, source)
                                  for e in entries])


def _split_from_name(path: Path) -> str | None:
    """The split a file's name states: ``rsicd_test.csv`` -> test, ``train-captions.csv`` -> train, else None."""
    match = _SPLIT_IN_NAME.search(path.stem.lower())
    return SPLIT_ALIASES[match.group(1)] if match else None


def _default_name(path: Path) -> str:
    stem = path.stem.lower()
    return stem.removeprefix("dataset_") or stem


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # Python's JSON reader stops at its recursion limit (about 1,000 levels)
        raise DataError("is nested too deeply (arrays or objects about 1,000 levels deep) for a caption file",
                        path=path, fix=_LAYOUT_HELP) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})", path=path,
                        fix="repair the file, e.g. re-download it or check it with `python -m json.tool`") from err
    except UnicodeDecodeError as err:
        raise DataError("is not UTF-8 text", path=path, fix="save the caption file as UTF-8") from err
    except ValueError as err:  # a number of over 4,300 digits, which Python refuses to convert
        raise DataError(f"holds a value Python cannot read ({str(err).split(';')[0]})", path=path,
                        fix="repair the file, e.g. re-download it") from None


def _json_layout(path: Path, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return "karpathy"
    if isinstance(data, dict) and data and all(isinstance(items, list) for items in data.values()):
        first = next((items[0] for items in data.values() if items), None)
        if isinstance(first, dict) and "filename" in first and "raw" in first:
            return "nwpu"
    found = (f"top-level keys {sorted(map(str, data))[:10]}" if isinstance(data, dict)
             else f"a JSON {type(data).__name__}")
    raise DataError(f"unknown caption file layout (found {found})", path=path, fix=_LAYOUT_HELP)


def _require(item: Any, key: str, path: Path, where: str, fix: str) -> Any:
    if not isinstance(item, dict):
        raise DataError(f"is a {type(item).__name__}, not an object", path=path, entry=where, fix=fix)
    if key not in item:
        raise DataError(f"missing key {key!r} (found {sorted(item)})", path=path, entry=where, fix=fix)
    return item[key]


def _clean_captions(captions: list[Any], path: Path, where: str, strict: bool = False,
                    dropped: list[str] | None = None, keep_empty: bool = False) -> list[str]:
    """Strip captions; empty or whitespace ones are refused with ``strict``, else dropped and noted in ``dropped``
    (or kept as ``""`` with ``keep_empty``).

    The real RSICD release has three empty captions: one of them must not refuse the other 54,602.
    """
    if not captions:
        raise DataError("has no captions", path=path, entry=where, fix="add at least one caption or remove the entry")
    cleaned = []
    for number, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise DataError(f"caption {number} is not text ({caption!r})", path=path, entry=where,
                            fix="write the caption as a string or delete it")
        if not caption.strip() and not keep_empty:
            if strict or dropped is None:
                raise DataError(f"caption {number} is empty", path=path, entry=where,
                                fix="write the caption or delete it (without strict checking empty captions are "
                                    "dropped with a warning)")
            dropped.append(f"{where} caption {number}")
            continue
        cleaned.append(caption.strip())
    return cleaned


def _split(value: Any, path: Path, where: str) -> str | None:
    if value is None:
        return None
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise DataError(f"unknown split {value!r}", path=path, entry=where, fix="use train, val (or validation) or test")
    return split


def _visible(text: str) -> str:
    """``text`` with control characters (and surrogates) written as escapes, to name them in a message without
    printing them."""
    return _CONTROL_CHARACTER.sub(lambda match: match.group().encode("unicode_escape", "backslashreplace").decode(),
                                  text)


def _existing_image(names: list[str | Path], path: Path, where: str, images_root: Path, required: bool = True) -> Path:
    """The first of ``images_root / name`` that is a file, else the first name's base name in ``images_root``
    (caption files in the wild hold absolute paths from their author's machine, with / or \\).

    A name holding a NUL or another control character is refused (no file system has such names in a dataset,
    and NUL cannot reach the operating system); a missing image raises :class:`DataError`, or with
    ``required=False`` gives the first candidate.
    """
    for name in map(str, names):
        if _CONTROL_CHARACTER.search(name):
            raise DataError(f"image path '{_visible(name)}' holds a control character or an unpaired surrogate",
                            path=path, entry=_visible(where), fix="correct the file name in the caption file")
    candidates = list(dict.fromkeys([*(images_root / name for name in names),
                                     images_root / PureWindowsPath(names[0]).name]))
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name longer than the file system allows
            continue
    if not required:
        return candidates[0]
    looked = " or ".join(str(candidate) for candidate in candidates)
    raise DataError(f"image file not found (looked for {looked})", path=path, entry=where,
                    fix=f"check the image folder ({images_root}) or remove the entry")


def _karpathy_entries(path: Path, data: Any, clean: Callable, find: Callable) -> Iterator[_Entry]:
    fix = 'each entry needs "filename" and "sentences": [{"raw": "..."}, ...] (and optionally "split")'
    images = _require(data, "images", path, "top level", _LAYOUT_HELP)
    if not isinstance(images, list):
        raise DataError('"images" is not a list', path=path, fix=_LAYOUT_HELP)
    for index, item in enumerate(images):
        where = f"entry {index}" + (f" ({item['filename']})" if isinstance(item, dict) and "filename" in item else "")
        filename = str(_require(item, "filename", path, where, fix))
        sentences = _require(item, "sentences", path, where, fix)
        if not isinstance(sentences, list):
            raise DataError('"sentences" is not a list', path=path, entry=where, fix=fix)
        raws = [_require(sentence, "raw", path, f"{where} sentence {number}", fix)
                for number, sentence in enumerate(sentences)]
        yield _Entry(where, find([filename], path, where),
                     clean(raws, path, where), _split(item.get("split"), path, where),
                     scene_from_filename(filename))


def _nwpu_entries(path: Path, data: Any, clean: Callable, find: Callable) -> Iterator[_Entry]:
    fix = 'each entry needs "filename", "raw" (and "raw_1" ... "raw_4", optionally "split")'
    if not isinstance(data, dict):
        raise DataError(f"is a JSON {type(data).__name__}, not an object of scene classes", path=path, fix=_LAYOUT_HELP)
    for scene, items in data.items():
        if not isinstance(items, list):
            raise DataError(f"scene {scene!r} does not hold a list of images", path=path, fix=_LAYOUT_HELP)
        for index, item in enumerate(items):
            where = f"entry {scene}[{index}]" + (f" ({item['filename']})" if isinstance(item, dict) and "filename" in item
                                                 else "")
            filename = str(_require(item, "filename", path, where, fix))
            _require(item, "raw", path, where, fix)
            caption_keys = sorted((m for m in map(_NWPU_CAPTION_KEY.fullmatch, item) if m),
                                  key=lambda match: int(match.group(1) or 0))
            image = find([Path(scene) / filename, filename], path, where)
            yield _Entry(where, image, clean([item[m.group(0)] for m in caption_keys], path, where),
                         _split(item.get("split"), path, where), scene)


def _csv_entries(path: Path, clean: Callable, find: Callable, default_split: str | None) -> list[_Entry]:
    """One entry per image of a one-row-per-caption CSV (``filepath,caption`` or ``filename,title``)."""
    fix = "the header must be filepath,caption[,split][,scene] or filename,title[,split]; one row per caption"
    previous_limit = csv.field_size_limit(MAX_CSV_FIELD)
    reader = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            found = reader.fieldnames or []
            columns = [CSV_COLUMN_ALIASES.get(column.strip(), column.strip()) for column in found]
            missing = [column for column in CSV_COLUMNS[:2] if column not in columns]
            if missing:
                raise DataError(f"missing CSV columns {missing} (found {found})", path=path, entry="header", fix=fix)
            reader.fieldnames = columns
            # The reference code's layout has no split column: its files hold one split each.
            fixed_split = None if "split" in columns or "filename" not in found else default_split or DEFAULT_SPLIT
            entries: dict[str, _Entry] = {}
            for row in reader:
                filepath = (row["filepath"] or "").strip()
                where = f"line {reader.line_num}" + (f" ({filepath})" if filepath else "")
                if not filepath:
                    raise DataError("empty filepath", path=path, entry=where, fix=fix)
                captions = clean([row["caption"] or ""], path, where)
                split = _split(row["split"] or None, path, where) if "split" in columns else fixed_split
                entry = entries.get(filepath)
                if entry is None:
                    if "scene" in columns:
                        scene = (row["scene"] or "").strip() or None
                    else:
                        scene = scene_from_filename(PureWindowsPath(filepath).name)
                    entries[filepath] = _Entry(where, find([filepath], path, where), captions, split, scene)
                elif entry.split != split:
                    raise DataError(f"split {split!r} differs from {entry.split!r} given at {entry.where}", path=path,
                                    entry=where, fix="give every caption row of an image the same split")
                else:
                    entry.captions.extend(captions)
    except UnicodeDecodeError as err:
        raise DataError("is not UTF-8 text", path=path, fix="save the caption file as UTF-8") from err
    except csv.Error as err:  # a field over MAX_CSV_FIELD characters, or broken quoting
        where = f"line {reader.line_num}" if reader is not None else "header"
        raise DataError(f"is not readable CSV ({err})", path=path, entry=where,
                        fix=f"check the quoting (an unclosed quote runs on to the end of the file); fields are "
                            f"at most {MAX_CSV_FIELD:,} characters") from None
    finally:
        csv.field_size_limit(previous_limit)
    return list(entries.values())


def _drop_empty(path: Path, entries: list[_Entry], dropped: list[str]) -> list[_Entry]:
    """Warn once about dropped empty captions; drop the images they left without any caption."""
    if not dropped:
        return entries
    kept = [entry for entry in entries if entry.captions]
    lost = len(entries) - len(kept)
    images = f"; {lost} image(s) left without captions are dropped too" if lost else ""
    warnings.warn(RsitrWarning(f"{path}: dropped {len(dropped)} empty caption(s) (e.g. {'; '.join(dropped[:3])})"
                               f"{images}. Refuse such a file with `strict=True`", parameters=("strict",)),
                  stacklevel=3)
    return kept


def _settle_splits(path: Path, entries: list[_Entry], seed: int) -> None:
    """Keep the file's splits, or draw a seeded 80/10/10 split when the file has none at all."""
    unsplit = [entry for entry in entries if entry.split is None]
    if len(unsplit) == len(entries):
        for entry, split in zip(entries, random_splits(len(entries), seed)):
            entry.split = split
    elif unsplit:
        raise DataError("has no split while other entries do", path=path, entry=unsplit[0].where,
                        fix="give every entry a split, or none so that a seeded 80/10/10 split is drawn")


def _warn_unusual_caption_counts(path: Path, entries: list[_Entry]) -> None:
    unusual = [entry for entry in entries if len(entry.captions) != EXPECTED_CAPTIONS]
    if unusual:
        examples = "; ".join(f"{entry.where}: {len(entry.captions)}" for entry in unusual[:3])
        warnings.warn(f"{path}: {len(unusual)} of {len(entries)} images have other than {EXPECTED_CAPTIONS} captions "
                      f"(e.g. {examples}); all their captions are kept", RsitrWarning, stacklevel=3)
