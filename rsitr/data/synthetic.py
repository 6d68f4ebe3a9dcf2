"""A small generated caption corpus of "aerial" images for tests and the demo (no download needed).

Each image is a coloured shape on a textured scene background (farmland, desert, water, forest,
residential); its 5 captions name exactly those three attributes, so captions are determined by image
content and a tiny model trained for a few epochs learns to retrieve them. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rsitr.data.records import random_splits

SCENES = ("farmland", "desert", "water", "forest", "residential")
COLOURS = {"red": (220, 30, 30), "yellow": (245, 225, 40), "white": (250, 250, 250), "black": (10, 10, 10),
           "purple": (150, 40, 190), "orange": (250, 130, 10)}
SHAPES = ("circle", "square", "triangle", "cross")
CAPTION_TEMPLATES = (
    "{a_colour} {shape} on {scene}",
    "an aerial image of {scene} with {a_colour} {shape}",
    "{a_colour} {shape} seen from above over {scene}",
    "there is {a_colour} {shape} in this {scene} scene",
    "remote sensing image of {scene} and {a_colour} {shape}",
)
SCENE_WORDS = {"farmland": "farmland", "desert": "desert", "water": "water", "forest": "forest",
               "residential": "residential area"}
FORMATS = ("karpathy", "nwpu", "csv")


def synthetic_captions(colour: str, shape: str, scene: str) -> list[str]:
    a_colour = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour}"
    return [template.format(a_colour=a_colour, shape=shape, scene=SCENE_WORDS[scene])
            for template in CAPTION_TEMPLATES]


def make_synthetic_dataset(root: str | Path, n_images: int = 60, image_size: int = 64, seed: int = 0,
                           fmt: str = "karpathy") -> Path:
    """Write ``n_images`` images under ``root/images`` and a caption file in layout ``fmt``; return its path.

    File names are ``<scene>_<n>.png`` (in ``root/images/<scene>/`` for the NWPU layout, as NWPU-Captions
    ships them). Splits are a seeded 80/10/10. The first ``len(SCENES) * len(COLOURS) * len(SHAPES)`` (120)
    images all differ in (scene, colour, shape), so their caption sets differ too.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown caption layout {fmt!r}; choose one of {', '.join(FORMATS)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    combinations = list(itertools.product(SCENES, COLOURS, SHAPES))
    order = rng.permutation(len(combinations))
    entries = []
    for index, split in enumerate(random_splits(n_images, seed)):
        scene, colour, shape = combinations[order[index % len(combinations)]]
        filename = f"{scene}_{index}.png"
        image_path = root / "images" / (Path(scene) / filename if fmt == "nwpu" else filename)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        _draw_image(scene, COLOURS[colour], shape, image_size, rng).save(image_path)
        entries.append({"filename": filename, "split": split, "scene": scene,
                        "captions": synthetic_captions(colour, shape, scene)})
    return _write_caption_file(root, entries, fmt)


def _draw_image(scene: str, colour: tuple[int, int, int], shape: str, size: int,
                rng: np.random.Generator) -> Image.Image:
    image = Image.fromarray(_background(scene, size, rng))
    radius = size * rng.uniform(0.18, 0.26)
    cx, cy = rng.uniform(radius + 2, size - radius - 2, 2)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    else:  # cross
        arm = radius / 3
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=colour)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=colour)
    return image


def _background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 texture that makes each scene recognisable."""
    y, x = np.mgrid[0:size, 0:size] / size
    noise = rng.normal(0.0, 8.0, (size, size, 1))
    if scene == "farmland":  # parallel fields, alternately green and brown
        stripes = (np.floor((x if rng.random() < 0.5 else y) * rng.integers(4, 8)) % 2)[..., None]
        base = np.where(stripes > 0, (90, 150, 60), (150, 110, 60))
    elif scene == "desert":  # sand with dunes
        dunes = np.sin((x + 0.5 * y) * rng.uniform(10, 16) + rng.uniform(0, 6))[..., None]
        base = np.array((215, 185, 125)) + 15 * dunes
    elif scene == "water":  # deep blue with ripples
        ripples = np.sin(y * rng.uniform(25, 35) + rng.uniform(0, 6))[..., None]
        base = np.array((30, 75, 155)) + 10 * ripples
    elif scene == "forest":  # blotchy canopy
        canopy = np.kron(rng.random((8, 8)), np.ones((size // 8 + 1, size // 8 + 1)))[:size, :size, None]
        base = np.array((25, 80, 35)) + 50 * canopy * np.array((0.4, 1.0, 0.4))
    else:  # residential: grey blocks between light roads
        period = size // rng.integers(3, 5)
        roads = ((np.arange(size)[:, None] % period < 2) | (np.arange(size)[None, :] % period < 2))[..., None]
        base = np.where(roads, (200, 200, 195), (120, 115, 110))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_caption_file(root: Path, entries: list[dict], fmt: str) -> Path:
    if fmt == "csv":
        path = root / "dataset_synthetic.csv"
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["filepath", "caption", "split", "scene"])
            writer.writerows([e["filename"], caption, e["split"], e["scene"]] for e in entries for caption in e["captions"])
        return path
    path = root / "dataset_synthetic.json"
    if fmt == "karpathy":
        images, sentence_id = [], itertools.count()
        for image_id, e in enumerate(entries):
            sentences = [{"raw": caption, "tokens": caption.split(), "imgid": image_id, "sentid": next(sentence_id)}
                         for caption in e["captions"]]
            images.append({"filename": e["filename"], "imgid": image_id, "split": e["split"], "sentences": sentences,
                           "sentids": [s["sentid"] for s in sentences]})
        data: dict = {"images": images, "dataset": "synthetic"}
    else:  # nwpu: scene classes at the top, raw, raw_1 ... raw_4 per image
        data = {scene: [] for scene in SCENES}
        for image_id, e in enumerate(entries):
            captions = {("raw" if n == 0 else f"raw_{n}"): caption for n, caption in enumerate(e["captions"])}
            data[e["scene"]].append({"filename": e["filename"], "split": e["split"], **captions, "imgid": image_id,
                                     "sentids": [len(captions) * image_id + n for n in range(len(captions))]})
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path
