"""Procedural COCO-format scenes: the offline stand-in for COCO detection, instance and semantic segmentation.

Each image is a textured background (smooth colour noise, stripes, checkers, gradients) with 1..N objects pasted in
random depth order: circles, squares and triangles (random size, rotation, colour) and real Fashion-MNIST garments
(their grey-level texture, tinted, with the thresholded silhouette as the shape). Later objects occlude earlier ones;
annotations describe only what is *visible*, so masks are exact and disjoint and every box is the tight box of the
visible mask. A placement that would hide more than half of an earlier object is re-drawn, so every annotated object
stays recognisable and no painted pixel is left unannotated.

Written to disk in the real COCO format, so the very same reader and COCOeval serve both this set and COCO 2017:

    <root>/images/000001.png ...            RGB, image_size x image_size
    <root>/instances.json                   COCO instances: images, annotations (RLE masks, xywh boxes), categories
    <root>/semantic/000001.png ...          uint8 class-index maps (0 = background, else the category id)

API:
    scenes = generate_scenes(root, n_images=200, image_size=128, seed=0)   # -> SceneSet (paths); idempotent
    mask = semantic_mask(annotations_of_one_image, height, width)          # -> (H, W) uint8, 0 = background
    CATEGORIES, CLASS_NAMES                                                 # ids 1..4; CLASS_NAMES[0] = "background"

Image i is drawn from `numpy.random.default_rng([seed, i])`, so a larger set starts with the smaller set's images and
the output is identical across machines for the same numpy (PCG64 streams are stable). Garments for `split="train"`
come from the Fashion-MNIST training file and for `split="val"` from the test file, so validation scenes show
unseen garments.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

CATEGORIES: list[dict] = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "garment", "supercategory": "fashion_mnist"},
]
CLASS_NAMES: list[str] = ["background"] + [c["name"] for c in CATEGORIES]  # index = semantic label

FORMAT_VERSION = 1  # bump when the drawing recipe changes, so cached sets are regenerated

MIN_VISIBLE_FRACTION = 0.5  # an object must keep at least this share of its own pixels visible
PLACEMENT_TRIES = 20  # re-draws of one object before it is dropped from the scene


@dataclass(frozen=True)
class SceneSet:
    """Paths of one generated split (what `generate_scenes` returns)."""

    root: Path  # folder holding everything below
    image_dir: Path  # RGB PNGs, named in instances.json
    annotation_file: Path  # COCO instances json
    semantic_dir: Path  # uint8 PNG class maps with the same file names as the images
    num_images: int  # number of images written


def generate_scenes(
    root: str | Path,
    n_images: int,
    image_size: int = 128,
    seed: int = 0,
    split: str = "train",
    max_objects: int = 4,
    min_objects: int = 1,
) -> SceneSet:
    """Write `n_images` scenes under `root` (images/, instances.json, semantic/) and return their paths.

    Idempotent: if `root` already holds a complete set made with the same arguments, nothing is redrawn. The set is
    written into a temporary sibling folder and renamed into place, so an interrupted run never leaves a half set.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    root = Path(root)
    params = {
        "n_images": n_images, "image_size": image_size, "seed": seed, "split": split,
        "max_objects": max_objects, "min_objects": min_objects, "format_version": FORMAT_VERSION,
    }
    scenes = _scene_set(root, n_images)
    if scenes.annotation_file.exists():
        with open(scenes.annotation_file) as f:
            if json.load(f).get("info", {}).get("generator_params") == params:
                return scenes
        raise FileExistsError(f"{root} holds a scene set made with other parameters; delete it or pick another root")

    from PIL import Image
    from pycocotools import mask as mask_utils

    garments = _fashion_mnist_images("train" if split == "train" else "test")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    (tmp / "images").mkdir()
    (tmp / "semantic").mkdir()
    images, annotations = [], []
    for index in range(n_images):
        rng = np.random.default_rng([seed, index])
        rgb, objects = draw_scene(rng, image_size, garments, min_objects, max_objects)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        Image.fromarray(rgb).save(tmp / "images" / file_name)
        anns = []
        for category_id, visible in objects:
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({
                "id": len(annotations) + len(anns) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": int(visible.sum()),
                "bbox": mask_to_xywh(visible),
                "iscrowd": 0,
            })
        Image.fromarray(semantic_mask(anns, image_size, image_size)).save(tmp / "semantic" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        annotations.extend(anns)
    coco = {
        "info": {"description": "sema-bench procedural COCO scenes", "generator_params": params},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    with open(tmp / "instances.json", "w") as f:
        json.dump(coco, f)
    try:
        tmp.rename(root)
    except OSError:  # another process finished the same set first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not scenes.annotation_file.exists():
            raise
    return scenes


def semantic_mask(annotations: Iterable[dict], height: int, width: int) -> np.ndarray:
    """(H, W) uint8 class map of one image from its COCO annotations: 0 = background, else the category id.

    Procedural masks are disjoint, so the order does not matter there; for real COCO (overlapping masks) later
    annotations win, and crowd regions are painted like any other.
    """
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), dtype=np.uint8)
    for ann in annotations:
        out[decode_segmentation(ann["segmentation"], height, width, mask_utils)] = ann["category_id"]
    return out


def decode_segmentation(segmentation, height: int, width: int, mask_utils=None) -> np.ndarray:
    """Boolean (H, W) mask from a COCO segmentation: compressed or uncompressed RLE, or a list of polygons."""
    if mask_utils is None:
        from pycocotools import mask as mask_utils
    if isinstance(segmentation, list):  # polygons (real COCO)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (COCO crowd annotations)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def mask_to_xywh(mask: np.ndarray) -> list[float]:
    """Tight COCO box [x, y, w, h] of a boolean mask, in pixel-edge coordinates (a single pixel is 1 x 1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def draw_scene(
    rng: np.random.Generator, size: int, garments: np.ndarray, min_objects: int, max_objects: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One scene: (uint8 RGB image, [(category_id, visible boolean mask), ...]) in painting order."""
    canvas = _background(rng, size)
    placed: list[tuple[int, np.ndarray]] = []  # (category, full mask) in depth order
    visible: list[np.ndarray] = []
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(n_objects):
        for _try in range(PLACEMENT_TRIES):
            category_id = int(rng.integers(1, len(CATEGORIES) + 1))
            full, texture = _object(rng, size, category_id, garments)
            if full.sum() < 16:
                continue
            shrunk = [v & ~full for v in visible]
            if all(s.sum() >= MIN_VISIBLE_FRACTION * m.sum() for s, (_, m) in zip(shrunk, placed)):
                break
        else:
            continue  # could not place this object without hiding another one; the scene has one object fewer
        colour = _contrasting_colour(rng, canvas[full].mean(axis=0))
        canvas[full] = (texture[full, None] * colour[None, :]).clip(0, 255)
        visible = shrunk + [full.copy()]
        placed.append((category_id, full))
    if not placed:  # min_objects >= 1 promises at least one object; an empty canvas always accepts one
        return draw_scene(rng, size, garments, min_objects, max_objects)
    noise = rng.normal(0.0, 4.0, size=canvas.shape)
    image = (canvas + noise).clip(0, 255).astype(np.uint8)
    return image, [(c, v) for (c, _), v in zip(placed, visible)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float (H, W, 3) texture in 0..255: smooth colour noise, stripes, a checkerboard or a gradient."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 215, size=3)
    if kind == 0:  # low-frequency colour noise: a coarse random grid, upsampled bilinearly
        cells = int(rng.integers(3, 9))
        grid = rng.uniform(-60, 60, size=(cells, cells, 3))
        return (base + _upsample(grid, size)).clip(0, 255)
    if kind == 1:  # stripes at a random angle and frequency
        angle, freq = rng.uniform(0, math.pi), rng.uniform(3, 12)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        other = rng.uniform(40, 215, size=3)
        return base + (other - base) * (0.5 + 0.5 * wave[..., None])
    if kind == 2:  # checkerboard
        cells = int(rng.integers(3, 10))
        board = ((xx * cells).astype(int) + (yy * cells).astype(int)) % 2
        other = rng.uniform(40, 215, size=3)
        return np.where(board[..., None] == 1, base, other).astype(np.float64)
    angle = rng.uniform(0, 2 * math.pi)  # linear gradient
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    other = rng.uniform(40, 215, size=3)
    return base + (other - base) * ramp[..., None]


def _object(
    rng: np.random.Generator, size: int, category_id: int, garments: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(boolean mask, float shading in ~0.35..1.05) of one object at a random place, scale and rotation."""
    from PIL import Image, ImageDraw

    extent = rng.uniform(0.18, 0.45) * size  # the object's bounding extent in pixels
    cx, cy = rng.uniform(extent / 2, size - extent / 2, size=2)
    if category_id == 4:  # a real Fashion-MNIST garment: silhouette = thresholded grey levels, holes filled
        from scipy.ndimage import binary_fill_holes

        garment = garments[int(rng.integers(len(garments)))]
        side = max(int(round(extent)), 8)
        grey = np.asarray(Image.fromarray(garment).resize((side, side), Image.BILINEAR), dtype=np.float32)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x0, y0 = min(max(x0, 0), size - side), min(max(y0, 0), size - side)
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = binary_fill_holes(grey > 0.15 * 255)
        shading = np.ones((size, size), dtype=np.float32)
        shading[y0:y0 + side, x0:x0 + side] = 0.35 + 0.7 * grey / 255.0
        return mask, shading
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    radius = extent / 2
    if category_id == 1:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    else:
        corners = 4 if category_id == 2 else 3
        # A square's half-diagonal is radius so it fits the extent; a triangle is inscribed in the circle.
        start = rng.uniform(0, 2 * math.pi)
        points = [
            (cx + radius * math.cos(start + 2 * math.pi * k / corners),
             cy + radius * math.sin(start + 2 * math.pi * k / corners))
            for k in range(corners)
        ]
        draw.polygon(points, fill=1)
    mask = np.asarray(canvas, dtype=bool)
    # A soft linear shading across the object so it is not a flat colour.
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ramp = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / max(radius, 1.0)
    return mask, (0.8 + 0.2 * ramp).clip(0.5, 1.05)


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random RGB colour at least ~80 (Euclidean, 0..255 scale) away from the background under the object."""
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background_mean) > 80:
            return colour
    return 255.0 - background_mean  # the complement is always far enough


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w, 3) grid to (size, size, 3)."""
    h, w, _ = grid.shape
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


@lru_cache(maxsize=2)
def _fashion_mnist_images(split: str) -> np.ndarray:
    """(N, 28, 28) uint8 Fashion-MNIST images of "train" or "test" (Debian's files; see fashion_mnist.py)."""
    from benchmarks.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(split)[0]


def _scene_set(root: Path, n_images: int) -> SceneSet:
    return SceneSet(root, root / "images", root / "instances.json", root / "semantic", n_images)


def cached_scenes(
    cache_dir: str | Path, split: str, n_images: int, image_size: int, seed: int, max_objects: int = 4,
    min_objects: int = 1, name: Optional[str] = None,
) -> SceneSet:
    """`generate_scenes` into `<cache_dir>/procedural_coco/<name>`, the name spelling out every parameter."""
    name = name or f"v{FORMAT_VERSION}_{split}_n{n_images}_s{image_size}_seed{seed}_obj{min_objects}-{max_objects}"
    return generate_scenes(
        Path(cache_dir) / "procedural_coco" / name, n_images, image_size, seed, split, max_objects, min_objects
    )
