"""The built-in demo set: synthetic faces for the 8 expressions under in-the-wild nuisance (clutter, pose,
skin tone, hair, occluders, lighting, blur, noise), written as JPEGs with index CSVs like a real dataset.

    python datasets.py demo --out demo_data      # the CLI lives in datasets.py with the other data commands
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data import TABLE2_COUNTS, process_pool, save_image, write_classes
from utils import AFFECTNET8, Progress, write_csv

# Face-frame units: u across (-1..1 = face half-width), v down (-1..1 = face half-height).
# Per class: brow (inner end, outer end) vertical offset (+ = down), eye opening, mouth kind, mouth half-width,
# corner lift (+ = up). The cues are deliberately large so a small CNN separates them at 64 px despite nuisance.
_EXPRESSIONS = {
    "neutral":  dict(brow=(0.00, 0.00), eye=1.00, mouth="line", width=0.30, lift=0.00),
    "happy":    dict(brow=(0.00, 0.00), eye=0.65, mouth="smile", width=0.44, lift=0.22),
    "sad":      dict(brow=(-0.14, 0.08), eye=0.70, mouth="line", width=0.28, lift=-0.16),
    "surprise": dict(brow=(-0.20, -0.20), eye=1.60, mouth="oval", width=0.15, lift=0.00),
    "fear":     dict(brow=(-0.18, -0.02), eye=1.60, mouth="grimace", width=0.42, lift=-0.08),
    "disgust":  dict(brow=(0.06, 0.04), eye=0.45, mouth="snarl", width=0.34, lift=-0.10),
    "anger":    dict(brow=(0.22, -0.08), eye=0.60, mouth="press", width=0.24, lift=-0.03),
    "contempt": dict(brow=(0.00, -0.04), eye=0.90, mouth="smirk", width=0.32, lift=0.26),
}
_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 132], [198, 134, 90], [141, 85, 54], [92, 58, 38]])
_HAIR = np.array([[20, 16, 14], [70, 45, 28], [120, 80, 40], [200, 170, 110], [150, 150, 150], [110, 30, 20]])


def demo_counts(min_train_per_class: int = 24, balanced: bool = False) -> list[int]:
    """Training images per class: Table 2 proportions scaled so the smallest class has min_train_per_class
    (balanced: min_train_per_class in every class)."""
    if balanced:
        return [min_train_per_class] * len(TABLE2_COUNTS)
    return [max(min_train_per_class, round(c * min_train_per_class / min(TABLE2_COUNTS))) for c in TABLE2_COUNTS]


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    """Random RGB colour."""
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _draw_face(draw: ImageDraw.ImageDraw, label: int, rng: np.random.Generator, size: int) -> None:
    """Draw one face with the class's expression at a random position, scale, rotation, skin tone and hair."""
    expr = _EXPRESSIONS[AFFECTNET8[label]]
    k = rng.uniform(0.8, 1.0)  # expression intensity: real faces are not all caricatures
    rx = size * rng.uniform(0.30, 0.38)
    ry = rx * rng.uniform(1.12, 1.25)
    cx, cy = size * (0.5 + rng.uniform(-0.08, 0.08)), size * (0.5 + rng.uniform(-0.06, 0.06))
    angle = math.radians(rng.uniform(-15, 15))
    cos, sin = math.cos(angle), math.sin(angle)

    def P(u: float, v: float) -> tuple[float, float]:
        """Face-frame point -> canvas pixel (scaled, rotated, placed)."""
        x, y = u * rx, v * ry
        return cx + x * cos - y * sin, cy + x * sin + y * cos

    def ellipse(uc: float, vc: float, au: float, av: float, n: int = 24) -> list[tuple[float, float]]:
        """Polygon of an ellipse in the face frame (a polygon, so it rotates with the face)."""
        return [P(uc + au * math.cos(t), vc + av * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]

    def curve(f: Callable[[float], float], u0: float, u1: float, n: int = 12) -> list[tuple[float, float]]:
        """Polyline v = f(u) for u from u0 to u1."""
        return [P(u, f(u)) for u in np.linspace(u0, u1, n)]

    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.08) + rng.normal(0, 6, 3)
    skin = tuple(int(c) for c in np.clip(skin, 0, 255))
    dark = tuple(int(c * 0.55) for c in skin)
    lip = tuple(int(c) for c in np.clip(np.array(skin) * [0.75, 0.45, 0.45], 0, 255))
    line_w = max(1, round(0.09 * ry))

    draw.polygon([P(-0.45, 0.9), P(0.45, 0.9), P(0.6, 2.5), P(-0.6, 2.5)], fill=dark)  # neck
    draw.polygon(ellipse(-1.02, 0.05, 0.14, 0.22, 12), fill=skin)  # ears
    draw.polygon(ellipse(1.02, 0.05, 0.14, 0.22, 12), fill=skin)
    if rng.random() < 0.85:  # hair cap behind the face; some people are bald
        hair = tuple(int(c) for c in _HAIR[rng.integers(len(_HAIR))])
        draw.polygon(ellipse(0, -0.25, 1.1, 0.85 + rng.uniform(0, 0.15)), fill=hair)
    draw.polygon(ellipse(0, 0, 1, 1, 40), fill=skin)

    # Eyes: white + iris, opening scaled per class; the iris looks slightly left/right at random.
    open_ = 1 + (expr["eye"] - 1) * k
    gaze = rng.uniform(-0.05, 0.05)
    for side in (-1, 1):
        eu, ev = 0.38 * side, -0.12
        draw.polygon(ellipse(eu, ev, 0.17, 0.085 * open_, 16), fill=(235, 235, 230), outline=dark)
        iris = min(0.075, 0.085 * open_)
        draw.polygon(ellipse(eu + gaze, ev, iris * 1.2, iris, 12), fill=(40, 30, 25))
        # Brows: inner end near the nose, outer end at the temple; offsets make the V (anger) or /\ (sad) shapes.
        inner, outer = expr["brow"][0] * k, expr["brow"][1] * k
        base = -0.36 - (0.1 if expr["eye"] > 1.3 else 0) * k
        draw.line([P(0.12 * side, base + inner), P(0.35 * side, base + (inner + outer) / 2 - 0.03),
                   P(0.6 * side, base + outer)], fill=dark, width=max(1, round(0.11 * ry)), joint="curve")

    # Nose; disgust adds wrinkles across the bridge.
    draw.line([P(0, -0.05), P(-0.06, 0.22), P(0.06, 0.24)], fill=dark, width=max(1, line_w // 2))
    if AFFECTNET8[label] == "disgust":
        for v in (-0.02, 0.06):
            draw.line(curve(lambda u, v=v: v + 2 * u * u, -0.14, 0.14, 6), fill=dark, width=max(1, line_w // 2))

    # Mouth at v = 0.55: either a closed line with curved / lifted corners, or an open polygon.
    mv, w, lift, kind = 0.55, expr["width"] * (0.9 + 0.2 * k), expr["lift"] * k, expr["mouth"]
    if kind in ("line", "press"):
        f = lambda u: mv - lift * (u / w) ** 2
        draw.line(curve(f, -w, w), fill=lip, width=line_w * (2 if kind == "press" else 1), joint="curve")
    elif kind == "smirk":
        side = 1 if rng.random() < 0.5 else -1  # contempt is one-sided, on either side
        f = lambda u: mv - lift * max(0.0, side * u / w) ** 2
        draw.line(curve(f, -w, w), fill=lip, width=line_w, joint="curve")
        draw.line([P(side * w * 1.05, mv - lift * 1.1), P(side * w * 1.2, mv - lift * 0.7)], fill=dark,
                  width=max(1, line_w // 2))  # the dimple at the raised corner
    elif kind == "oval":
        draw.polygon(ellipse(0, mv + 0.05, w * (0.9 + 0.2 * k), 0.2 * k, 20), fill=(60, 20, 20), outline=lip)
    else:
        # Open mouth between an upper and a lower lip curve, teeth showing along the upper lip.
        opening = {"smile": 0.18, "grimace": 0.16, "snarl": 0.12}[kind] * k
        if kind == "smile":
            upper = lambda u: mv - lift * (u / w) ** 2
            lower = lambda u: upper(u) + opening * (1 - (u / w) ** 2)
        elif kind == "grimace":
            upper = lambda u: mv - lift * (u / w) ** 2 - 0.02
            lower = lambda u: upper(u) + opening * (1 - (u / w) ** 8)
        else:  # snarl: the upper lip is raised on one side
            upper = lambda u: mv - 0.12 * k * max(0.0, 1 - abs(u - 0.3 * w) / (0.6 * w)) - lift * (u / w) ** 2
            lower = lambda u: mv + opening * (1 - (u / w) ** 2) ** 0.5 - lift * (u / w) ** 2
        outline = curve(upper, -w, w, 14) + curve(lower, w, -w, 14)
        draw.polygon(outline, fill=(245, 245, 235))
        teeth = lambda u: upper(u) + 0.55 * (lower(u) - upper(u))
        draw.polygon(curve(teeth, -w, w, 14) + curve(lower, w, -w, 14), fill=(60, 20, 20))
        draw.line(outline + outline[:1], fill=lip, width=max(1, line_w // 2))


def _demo_image(label: int, rng: np.random.Generator, img_size: int) -> Image.Image:
    """One demo image: cluttered background, a face, an occasional occluder, then lighting, blur and noise."""
    size = img_size * 2  # draw at 2x and downsample: cheap anti-aliasing
    image = Image.new("RGB", (size, size), _color(rng, 40, 220))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):  # clutter: shapes of random colour anywhere in the frame
        x0, y0 = rng.uniform(-0.2, 1, 2) * size
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * size, y0 + rng.uniform(0.1, 0.6) * size
        shape = int(rng.integers(3))
        if shape == 0:
            draw.rectangle([x0, y0, x1, y1], fill=_color(rng))
        elif shape == 1:
            draw.ellipse([x0, y0, x1, y1], fill=_color(rng))
        else:
            draw.line([x0, y0, x1, y1], fill=_color(rng), width=int(rng.integers(2, 8)))
    _draw_face(draw, label, rng, size)
    if rng.random() < 0.12:  # occluder: a hand, cup or microphone in front of part of the face
        x0, y0 = rng.uniform(0.15, 0.7, 2) * size
        ext = rng.uniform(0.12, 0.28, 2) * size
        draw.rounded_rectangle([x0, y0, x0 + ext[0], y0 + ext[1]], radius=int(ext.min() / 3), fill=_color(rng))
    image = image.resize((img_size, img_size), Image.Resampling.BOX)

    # Lighting: global gain, per-channel colour cast and a linear gradient in a random direction; then sensor noise.
    ramp = np.linspace(-0.5, 0.5, img_size, dtype=np.float32)
    phi, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.5)
    shade = rng.uniform(0.75, 1.2) * (1 + strength * (ramp[None, :] * math.cos(phi) + ramp[:, None] * math.sin(phi)))
    pixels = np.asarray(image, dtype=np.float32) * shade[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(0, 8)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * img_size / 96))
    return image


def _demo_file(job: tuple[Path, str, int, int, int, int, int]) -> None:
    """Pool worker: render one demo image and write it atomically."""
    out, rel, seed, split_id, label, index, img_size = job
    # One generator per image, keyed by (seed, split, class, index): no byte depends on order or on the worker.
    rng = np.random.default_rng([seed, split_id, label, index])
    # Fixed quality and no EXIF/ICC/timestamps: the same seed gives byte-identical files.
    save_image(_demo_image(label, rng, img_size), out / rel, format="JPEG", quality=90)


def make_demo(out_dir: str | os.PathLike, seed: int = 42, min_train_per_class: int = 24, val_per_class: int = 30,
              img_size: int = 96, balanced: bool = False) -> tuple[Path, Path]:
    """Write a deterministic synthetic demo set (JPEGs, classes.txt, train.csv, val.csv); returns both CSVs."""
    out = Path(out_dir)
    splits = {"train": demo_counts(min_train_per_class, balanced), "val": [val_per_class] * len(AFFECTNET8)}
    jobs, rows = [], {split: [] for split in splits}
    for split_id, (split, counts) in enumerate(splits.items()):
        for label, count in enumerate(counts):
            for i in range(count):
                rel = f"{split}/{AFFECTNET8[label]}/{AFFECTNET8[label]}_{i:05d}.jpg"
                jobs.append((out, rel, seed, split_id, label, i, img_size))
                rows[split].append((rel, label))
    progress = Progress(len(jobs), "demo")
    with process_pool(os.cpu_count() or 1, ("demo",)) as pool:
        for _ in pool.imap_unordered(_demo_file, jobs, chunksize=16):
            progress.step()
    write_classes(out, AFFECTNET8)
    for split in splits:  # the index files last: they only ever list images that are complete
        write_csv(out / f"{split}.csv", ("path", "label"), rows[split])
    return out / "train.csv", out / "val.csv"
