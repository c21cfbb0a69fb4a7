"""Procedural "shapes world": seeded scenes, prompts, ground-truth edits and a pixel classifier.

A scene is one or two flat-coloured shapes on a flat background.  Every edit (colour swap, shape
swap, background swap, add/remove an object) can be rendered exactly, together with the mask of the
pixels it changes, which makes this world a benchmark with ground truth (docs/design.md §5).

Geometry
    Pixel (row r, column c) covers [c, c+1) x [r, r+1); its centre is (c+0.5, r+0.5).  An object is
    described by its shape, colour, centre (x, y) and ``size`` = side of the axis-aligned box the shape
    fills (circle diameter, square side, triangle base and height, diamond diagonals).
Anti-aliasing
    Analytic coverage from a signed distance: ``alpha = clip(0.5 - sd, 0, 1)`` (a 1-px box filter across
    the edge), quantised to 1/16 (like 4x4 supersampling).  Quantising makes the masks *exact*: a pixel
    with alpha > 0 has alpha >= 1/16, and every palette pair differs by >= 78 in some channel, so such a
    pixel always changes by >= 4 levels when the object's colour, shape or the background changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from scipy import ndimage

# --------------------------------------------------------------------------------------------------
# Vocabulary / palette
# --------------------------------------------------------------------------------------------------

#: Object colours: saturated, well separated (min pairwise L2 distance 81: orange/yellow).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (150, 50, 190),
}
#: Background colours.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
#: Shapes. All fill a size x size box; the classifier tells them apart by template IoU.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: Grammar words (besides colours / backgrounds / shapes).
FUNCTION_WORDS: tuple[str, ...] = ("a", "and", "on", "background")

#: The whole word vocabulary, in a fixed order (the tokenizer's ids follow this order).
VOCAB: tuple[str, ...] = FUNCTION_WORDS + tuple(COLOURS) + tuple(BACKGROUNDS) + SHAPES

ALPHA_LEVELS = 16  # coverage quantisation (4x4-supersampling equivalent)

DEFAULT_SIZE = 64
# Object box sizes and margins at 64 px (scaled linearly with the image size).
_SIZE_RANGE_ONE = (18.0, 34.0)
_SIZE_RANGE_TWO = (14.0, 26.0)
_MARGIN = 3.0  # min distance from an object's box to the image border
_GAP = 4.0  # min gap between the boxes of two objects
_GRID = 0.25  # centres and sizes are multiples of this (makes scenes hashable exactly)

#: Split name -> stream id for the seeded generators. "train" and "heldout" are also disjoint by hash.
SPLITS: dict[str, int] = {"train": 0, "heldout": 1}
HELDOUT_BUCKETS = 16  # a scene is held-out iff sha256(canonical json)[0] % 16 == 0


# --------------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    centre: tuple[float, float]  # (x, y) in pixels
    size: float  # side of the box the shape fills, in pixels

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}")
        object.__setattr__(self, "centre", (float(self.centre[0]), float(self.centre[1])))
        object.__setattr__(self, "size", float(self.size))

    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the box the shape fills."""
        h = self.size / 2
        x, y = self.centre
        return (x - h, y - h, x + h, y + h)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    size: int = DEFAULT_SIZE  # image is size x size

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        object.__setattr__(self, "objects", tuple(self.objects))

    # JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "objects": [
                {"shape": o.shape, "colour": o.colour, "centre": list(o.centre), "size": o.size}
                for o in self.objects
            ],
            "background": self.background,
            "size": self.size,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal scenes give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict) -> "Scene":
        objs = tuple(Obj(o["shape"], o["colour"], tuple(o["centre"]), o["size"]) for o in d["objects"])
        return Scene(objs, d["background"], int(d.get("size", DEFAULT_SIZE)))

    @staticmethod
    def from_json(s: str) -> "Scene":
        return Scene.from_dict(json.loads(s))

    def replace(self, **kw) -> "Scene":
        return dataclasses.replace(self, **kw)


def scene_hash(scene: Scene) -> str:
    return hashlib.sha256(scene.to_json().encode()).hexdigest()


def is_heldout(scene: Scene) -> bool:
    """Hash partition of scene space: held-out and train scenes can never coincide."""
    return int(scene_hash(scene)[:2], 16) % HELDOUT_BUCKETS == 0


def split_of(scene: Scene) -> str:
    return "heldout" if is_heldout(scene) else "train"


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _polygon(shape: str, cx: float, cy: float, h: float) -> np.ndarray:
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "triangle":  # apex up
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif shape == "diamond":
        pts = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    else:
        raise ValueError(shape)
    return np.array([(cx + h * px, cy + h * py) for px, py in pts], dtype=np.float64)


def _signed_distance(shape: str, cx: float, cy: float, size: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to the shape; exact on edges, max of half-planes
    for polygons (slightly rounder at convex corners)."""
    h = size / 2
    if shape == "circle":
        return np.hypot(xs - cx, ys - cy) - h
    poly = _polygon(shape, cx, cy, h)
    # Vertices are clockwise in image coordinates (y down); outward normal of edge a->b is (dy, -dx).
    sd = None
    n = len(poly)
    for i in range(n):
        ax, ay = poly[i]
        bx, by = poly[(i + 1) % n]
        dx, dy = bx - ax, by - ay
        ln = np.hypot(dx, dy)
        nx, ny = dy / ln, -dx / ln
        d = (xs - ax) * nx + (ys - ay) * ny
        sd = d if sd is None else np.maximum(sd, d)
    return sd


def coverage(obj: Obj, size: int) -> np.ndarray:
    """Quantised anti-aliased coverage in [0,1], float32 [size,size]."""
    out = np.zeros((size, size), dtype=np.float32)
    x0, y0, x1, y1 = obj.box()
    c0, r0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    c1, r1 = min(int(np.ceil(x1)) + 1, size), min(int(np.ceil(y1)) + 1, size)
    if c1 <= c0 or r1 <= r0:
        return out
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    sd = _signed_distance(obj.shape, obj.centre[0], obj.centre[1], obj.size, xs, ys)
    a = np.clip(0.5 - sd, 0.0, 1.0)
    a = np.round(a * ALPHA_LEVELS) / ALPHA_LEVELS
    out[r0:r1, c0:c1] = a
    return out


def render(scene: Scene) -> np.ndarray:
    """uint8 [H, W, 3]."""
    s = scene.size
    img = np.empty((s, s, 3), dtype=np.float32)
    img[:] = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    for o in scene.objects:
        a = coverage(o, s)[..., None]
        img = img * (1 - a) + np.array(COLOURS[o.colour], dtype=np.float32) * a
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_batch(scenes: Sequence[Scene]) -> np.ndarray:
    """uint8 [B, H, W, 3]."""
    return np.stack([render(s) for s in scenes])


def object_masks(scene: Scene) -> list[np.ndarray]:
    """One bool [H, W] per object: every pixel the object touches (coverage > 0, edges included)."""
    return [coverage(o, scene.size) > 0 for o in scene.objects]


def _full_masks(scene: Scene) -> list[np.ndarray]:
    return [coverage(o, scene.size) >= 1 for o in scene.objects]


# --------------------------------------------------------------------------------------------------
# Sampling and splits
# --------------------------------------------------------------------------------------------------


def _q(v: float) -> float:
    return float(np.round(v / _GRID) * _GRID)


def _boxes_apart(a: Obj, b: Obj, gap: float) -> bool:
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def _random_obj(rng: np.random.Generator, size: int, srange: tuple[float, float], shape=None, colour=None) -> Obj:
    k = size / DEFAULT_SIZE
    s = _q(rng.uniform(srange[0] * k, srange[1] * k))
    lo, hi = _MARGIN * k + s / 2, size - _MARGIN * k - s / 2
    cx, cy = _q(rng.uniform(lo, hi)), _q(rng.uniform(lo, hi))
    shape = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
    colour = colour if colour is not None else list(COLOURS)[rng.integers(len(COLOURS))]
    return Obj(shape, colour, (cx, cy), s)


def _sort_objects(objs) -> tuple[Obj, ...]:
    """Left-to-right by centre x (then y): the prompt lists objects in this order."""
    return tuple(sorted(objs, key=lambda o: (o.centre[0], o.centre[1])))


def sample_scene(rng: np.random.Generator, size: int = DEFAULT_SIZE, n_objects: int | None = None,
                 p_two: float = 0.5) -> Scene:
    """A random scene (no split constraint; see :func:`sample_split_scene`)."""
    if n_objects is None:
        n_objects = 2 if rng.random() < p_two else 1
    bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    if n_objects == 1:
        return Scene((_random_obj(rng, size, _SIZE_RANGE_ONE),), bg, size)
    if n_objects != 2:
        raise ValueError("n_objects must be 1 or 2")
    k = size / DEFAULT_SIZE
    while True:
        a = _random_obj(rng, size, _SIZE_RANGE_TWO)
        for _ in range(50):
            b = _random_obj(rng, size, _SIZE_RANGE_TWO)
            if _boxes_apart(a, b, _GAP * k):
                return Scene(_sort_objects((a, b)), bg, size)


def sample_split_scene(rng: np.random.Generator, split: str, size: int = DEFAULT_SIZE, **kw) -> Scene:
    """Rejection-sample until the scene belongs to ``split`` (hash partition)."""
    want = split == "heldout"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    while True:
        sc = sample_scene(rng, size, **kw)
        if is_heldout(sc) == want:
            return sc


def split_rng(split: str, seed: int = 0, *extra: int) -> np.random.Generator:
    """Independent, named random stream: default_rng([stream id of split, seed, *extra])."""
    return np.random.default_rng([SPLITS[split], int(seed), *map(int, extra)])


def split_scenes(split: str, n: int, seed: int = 0, size: int = DEFAULT_SIZE, **kw) -> list[Scene]:
    """The first ``n`` scenes of the deterministic stream of ``split`` (prefix-stable in n)."""
    rng = split_rng(split, seed)
    return [sample_split_scene(rng, split, size, **kw) for _ in range(n)]


def scene_stream(split: str, seed: int = 0, size: int = DEFAULT_SIZE, **kw) -> Iterator[Scene]:
    rng = split_rng(split, seed)
    while True:
        yield sample_split_scene(rng, split, size, **kw)


def train_batch(seed: int, step: int, batch: int, size: int = DEFAULT_SIZE, stream: int = 0, **kw) -> list[Scene]:
    """Training batch for (seed, step): independent of anything else, so training resumes exactly."""
    rng = split_rng("train", seed, stream, step)
    return [sample_split_scene(rng, "train", size, **kw) for _ in range(batch)]


# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------


def object_phrase(o: Obj) -> str:
    return f"a {o.colour} {o.shape}"


def prompt_for(scene: Scene) -> str:
    """'a red circle on a white background', 'a red circle and a blue square on a gray background'."""
    objs = " and ".join(object_phrase(o) for o in scene.objects)
    return f"{objs} on a {scene.background} background"


def parse_prompt(prompt: str) -> tuple[list[tuple[str, str]], str | None]:
    """Inverse of :func:`prompt_for`: ([(colour, shape), ...], background). Raises ValueError."""
    words = prompt.lower().split()
    bg = None
    if len(words) >= 4 and words[-4:-2] == ["on", "a"] and words[-1] == "background":
        bg = words[-2]
        if bg not in BACKGROUNDS:
            raise ValueError(f"bad background in {prompt!r}")
        words = words[:-4]
    objs = []
    for part in " ".join(words).split(" and "):
        w = part.split()
        if len(w) != 3 or w[0] != "a" or w[1] not in COLOURS or w[2] not in SHAPES:
            raise ValueError(f"cannot parse {prompt!r}")
        objs.append((w[1], w[2]))
    return objs, bg


# --------------------------------------------------------------------------------------------------
# Ground-truth edits
# --------------------------------------------------------------------------------------------------


class Edit(NamedTuple):
    edited_scene: Scene
    source_prompt: str
    edited_prompt: str
    change_mask: np.ndarray  # bool [H, W]: exactly the pixels the edit can change


def _pick(rng, options, exclude=()):
    opts = [o for o in options if o not in exclude]
    return opts[rng.integers(len(opts))]


def _rng(rng):
    return rng if rng is not None else np.random.default_rng(0)


def _swap_attribute(scene: Scene, rng, index: int | None, attr: str, options, new: str | None):
    """Change one attribute of one object: (index, edited scene)."""
    rng = _rng(rng)
    i = int(rng.integers(len(scene.objects))) if index is None else index
    o = scene.objects[i]
    old = getattr(o, attr)
    new = new or _pick(rng, options, exclude=(old,))
    if new == old:
        raise ValueError(f"new {attr} equals the old one")
    objs = list(scene.objects)
    objs[i] = dataclasses.replace(o, **{attr: new})
    return i, scene.replace(objects=tuple(objs))


def colour_swap(scene: Scene, rng: np.random.Generator | None = None, index: int | None = None,
                new_colour: str | None = None) -> Edit:
    """One object's colour changes (one word of the prompt). Mask: that object's pixels."""
    i, edited = _swap_attribute(scene, rng, index, "colour", COLOURS, new_colour)
    return Edit(edited, prompt_for(scene), prompt_for(edited), object_masks(scene)[i])


def shape_swap(scene: Scene, rng: np.random.Generator | None = None, index: int | None = None,
               new_shape: str | None = None) -> Edit:
    """One object's shape changes (same centre, size, colour). Mask: union of old and new shape."""
    i, edited = _swap_attribute(scene, rng, index, "shape", SHAPES, new_shape)
    mask = object_masks(scene)[i] | object_masks(edited)[i]
    return Edit(edited, prompt_for(scene), prompt_for(edited), mask)


def background_swap(scene: Scene, rng: np.random.Generator | None = None, new_background: str | None = None) -> Edit:
    """Background colour changes. Mask: every pixel not fully covered by an object (AA edges included)."""
    rng = _rng(rng)
    new_background = new_background or _pick(rng, BACKGROUNDS, exclude=(scene.background,))
    if new_background == scene.background:
        raise ValueError("new background equals the old one")
    edited = scene.replace(background=new_background)
    full = np.zeros((scene.size, scene.size), dtype=bool)
    for m in _full_masks(scene):
        full |= m
    return Edit(edited, prompt_for(scene), prompt_for(edited), ~full)


def add_object(scene: Scene, rng: np.random.Generator | None = None, shape: str | None = None,
               colour: str | None = None, max_tries: int = 500) -> Edit:
    """Adds a second object (sizes as in two-object scenes) where it fits beside the only object.
    Mask: the new object. Raises ValueError when there is no room (large, central objects)."""
    rng = _rng(rng)
    if len(scene.objects) != 1:
        raise ValueError("add_object needs a one-object scene")
    k = scene.size / DEFAULT_SIZE
    for _ in range(max_tries):
        b = _random_obj(rng, scene.size, _SIZE_RANGE_TWO, shape, colour)
        if _boxes_apart(scene.objects[0], b, _GAP * k):
            edited = scene.replace(objects=_sort_objects(scene.objects + (b,)))
            return Edit(edited, prompt_for(scene), prompt_for(edited), coverage(b, scene.size) > 0)
    raise ValueError("no room for another object")


def remove_object(scene: Scene, rng: np.random.Generator | None = None, index: int | None = None) -> Edit:
    """Removes one object of a two-object scene. Mask: the removed object."""
    rng = _rng(rng)
    if len(scene.objects) != 2:
        raise ValueError("remove_object needs a two-object scene")
    i = int(rng.integers(2)) if index is None else index
    edited = scene.replace(objects=tuple(o for j, o in enumerate(scene.objects) if j != i))
    return Edit(edited, prompt_for(scene), prompt_for(edited), object_masks(scene)[i])


EDITS = {
    "colour": colour_swap,
    "shape": shape_swap,
    "background": background_swap,
    "add": add_object,
    "remove": remove_object,
}


# --------------------------------------------------------------------------------------------------
# Pixel classifier
# --------------------------------------------------------------------------------------------------

_OBJ_NAMES = list(COLOURS)
_OBJ_RGB = np.array([COLOURS[c] for c in _OBJ_NAMES], dtype=np.float32)
_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[c] for c in _BG_NAMES], dtype=np.float32)
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Prediction:
    colour: str
    shape: str
    background: str
    centre: tuple[float, float]  # of the region's bounding box
    area: int
    shape_iou: float  # IoU of the region with the best template
    scores: dict = field(default_factory=dict)  # shape -> IoU


def _as_float(image: np.ndarray) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim != 3 or im.shape[2] != 3:
        raise ValueError("image must be [H, W, 3]")
    return im.astype(np.float32)


def nearest_colour(rgb) -> str:
    d = np.linalg.norm(_OBJ_RGB - np.asarray(rgb, dtype=np.float32), axis=1)
    return _OBJ_NAMES[int(np.argmin(d))]


def estimate_background(image: np.ndarray) -> tuple[str, np.ndarray]:
    """(palette name, measured rgb) of the background: median of the 1-px border."""
    im = _as_float(image)
    border = np.concatenate([im[0], im[-1], im[1:-1, 0], im[1:-1, -1]])
    rgb = np.median(border, axis=0)
    name = _BG_NAMES[int(np.argmin(np.linalg.norm(_BG_RGB - rgb, axis=1)))]
    return name, rgb


def foreground(image: np.ndarray, bg_rgb) -> np.ndarray:
    """bool [H, W]: pixels nearer to some object colour than to the (measured) background colour."""
    im = _as_float(image)
    d_bg = np.linalg.norm(im - np.asarray(bg_rgb, np.float32), axis=-1)
    d_obj = np.linalg.norm(im[..., None, :] - _OBJ_RGB, axis=-1).min(-1)
    return d_obj < d_bg


def components(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """8-connected components of a bool mask, largest first."""
    lab, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return []
    areas = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    order = np.argsort(-areas, kind="stable")
    return [lab == (k + 1) for k in order if areas[k] >= min_area]


def _template_scores(region: np.ndarray) -> dict[str, float]:
    """Best IoU of ``region`` with each shape's (coverage >= 0.5) template fitted to its bbox."""
    rows = np.flatnonzero(region.any(1))
    cols = np.flatnonzero(region.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cx, cy = (c0 + c1) / 2, (r0 + r1) / 2
    s = float(max(r1 - r0, c1 - c0))
    pad = 3
    R0, R1 = max(r0 - pad, 0), min(r1 + pad, region.shape[0])
    C0, C1 = max(c0 - pad, 0), min(c1 + pad, region.shape[1])
    sub = region[R0:R1, C0:C1]
    ys, xs = np.mgrid[R0:R1, C0:C1].astype(np.float64) + 0.5
    area = sub.sum()
    scores = {}
    for shape in SHAPES:
        best = 0.0
        for ds in (-0.5, 0.0, 0.5, 1.0, 1.5):
            for dx in (-0.5, 0.0, 0.5):
                for dy in (-0.5, 0.0, 0.5):
                    t = _signed_distance(shape, cx + dx, cy + dy, s + ds, xs, ys) <= 0
                    inter = np.logical_and(t, sub).sum()
                    iou = inter / (area + t.sum() - inter)
                    best = max(best, float(iou))
        scores[shape] = best
    return scores


def classify_region(image: np.ndarray, region: np.ndarray, background: str | None = None) -> Prediction:
    """Colour (nearest palette colour of the median interior pixel) and shape (template IoU) of a region."""
    im = _as_float(image)
    bg_name = background if background is not None else estimate_background(im)[0]
    inner = ndimage.binary_erosion(region, structure=_EIGHT)
    px = im[inner] if inner.sum() >= 4 else im[region]
    colour = nearest_colour(np.median(px, axis=0))
    scores = _template_scores(region)
    shape = max(scores, key=scores.get)
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    centre = ((cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2)
    return Prediction(colour, shape, bg_name, centre, int(region.sum()), scores[shape], scores)


def classify(image: np.ndarray, mask: np.ndarray | None = None, background: str | None = None) -> Prediction | None:
    """Classify the object in ``mask`` (or the largest non-background region of the whole image).

    Uses the largest 8-connected foreground component inside the mask, so faint decoder artefacts
    and anti-aliased fringes don't fool it. Returns None when there is no foreground at all."""
    im = _as_float(image)
    if background is None:
        bg_name, bg_rgb = estimate_background(im)
    else:
        bg_name, bg_rgb = background, np.array(BACKGROUNDS[background], np.float32)
    fg = foreground(im, bg_rgb)
    if mask is not None:
        fg &= np.asarray(mask, bool)
    comps = components(fg)
    if not comps:
        return None
    return classify_region(im, comps[0], bg_name)


def classify_scene(image: np.ndarray, n_objects: int | None = None, min_area: int = 12,
                   background: str | None = None) -> list[Prediction]:
    """The ``n_objects`` largest foreground regions (all with area >= min_area if None), left to right."""
    im = _as_float(image)
    if background is None:
        bg_name, bg_rgb = estimate_background(im)
    else:
        bg_name, bg_rgb = background, np.array(BACKGROUNDS[background], np.float32)
    comps = components(foreground(im, bg_rgb), min_area=min_area)
    if n_objects is not None:
        comps = comps[:n_objects]
    preds = [classify_region(im, c, bg_name) for c in comps]
    return sorted(preds, key=lambda p: (p.centre[0], p.centre[1]))


def score_prompt(image: np.ndarray, prompt: str) -> dict:
    """Judge a text-to-image generation against its prompt.

    ``objects_right``: the multiset of (colour, shape) of the largest regions equals the prompt's.
    ``per_object``: fraction of the prompt's objects found (multiset intersection / count).
    ``background_right``: the border's nearest background colour is the prompt's."""
    want, bg = parse_prompt(prompt)
    preds = classify_scene(image, n_objects=len(want))
    got = [(p.colour, p.shape) for p in preds]
    rest = list(got)
    hits = 0
    for w in want:
        if w in rest:
            rest.remove(w)
            hits += 1
    bg_name = estimate_background(image)[0]
    return {
        "objects_right": hits == len(want) and len(got) == len(want),
        "per_object": hits / len(want),
        "colour_right": sorted(c for c, _ in got) == sorted(c for c, _ in want),
        "shape_right": sorted(s for _, s in got) == sorted(s for _, s in want),
        "background_right": bg is None or bg_name == bg,
        "got": got,
        "want": want,
    }
