"""Facial expressions on images, folders, videos and a camera with a trained checkpoint.

    python predict.py [--ckpt best.pt] INPUT ... [--camera N] [--detect] [--tta hflip] [--annotate] [--out DIR]

Without --ckpt it uses the released FER2013 model, pretrained/fer2013.pt (7 classes, 48 px grayscale faces).

Images are face crops by default, read exactly as evaluate.py reads them; with --detect, faces are found first
(--detector: MTCNN by default, or OpenCV's Haar cascades; see detectors.py) and each is classified. Videos and the
camera always detect: the whole frame is searched every --detect-every frames and the faces are followed in between
(realtime.FaceFinder), all faces of a frame run as one batch, faces are tracked frame to frame and each track's
probabilities are smoothed over time. A camera is read in its own thread that hands over only the newest frame
(--realtime plays a file that way); Ctrl-C or q (--show) ends with whole outputs. One unreadable file in a folder
or list is named and skipped. --benchmark measures the video pipeline end to end, once per model mode.
Writes OUT/predictions.csv, one row per image or frame and face: file, frame, track (face id in a video), the
face box face_x, face_y, face_w, face_h (the whole image for a crop), label (predicted class index), name (its
class name) and prob_<class> for every class (smoothed over time for videos); with --annotate, annotated copies.
OpenCV and the detector (requirements-video.txt) are only needed for --detect, videos and the camera. --ckpt also
takes a model exported by export.py (.onnx), run by ONNX Runtime through the same pipeline (requirements-onnx.txt).
"""
from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

import data
import detectors
import expressions
import models
import onnx_model
import realtime
import utils

# The released model (pretrained/README.md is its card): what predict.py runs when no --ckpt is given.
RELEASED_MODEL = Path(__file__).resolve().parent / "pretrained" / "fer2013.pt"
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
KINDS: dict[str, str] = {**dict.fromkeys(data.IMAGE_EXTENSIONS, "image"), **dict.fromkeys(VIDEO_EXTENSIONS, "video")}
# Inputs are decoded once before the model loads, at reduced scale down to this side: a damaged file shows at any
# scale, and a reduced-scale JPEG decode costs a fraction of a full one.
CHECK_SIZE = 64
# --detect-every's default: a whole-frame face search every 10th frame, the faces followed in between (--track), so
# a face entering the picture is found within a third of a second at 30 fps. On the 640 x 480 test clip this
# kept every face that detection on every frame found, at twice its frame rate (docs/export.md).
DETECT_EVERY = 10

# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------

def _kind(path: Path) -> str | None:
    """"image" / "video" by extension, None for anything else."""
    return KINDS.get(path.suffix.lower())


def collect_sources(inputs: Sequence[str], camera: int | None, out_dir: Path) -> list[realtime.Source]:
    """Expand files and folders (recursively, skipping out_dir) into sources; the camera comes last."""
    sources: list[realtime.Source] = []
    out_dir = out_dir.resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*"))
                     if p.is_file() and _kind(p) and out_dir not in p.resolve().parents]
            if not found:
                raise utils.UserError(f"no images or videos in folder {item} (looked for {', '.join(KINDS)})")
            top = path.resolve().name or "input"
            sources += [realtime.Source(_kind(p), str(p), str(p), str(Path(top, p.relative_to(path)))) for p in found]
        elif path.is_file():
            kind = _kind(path)
            if kind is None:
                raise utils.UserError(f"{item}: not an image or video file (known extensions: {', '.join(KINDS)})")
            sources.append(realtime.Source(kind, str(path), item, path.name))
        else:
            raise utils.UserError(f"input not found: {item}")
    if camera is not None:
        sources.append(realtime.Source("camera", str(camera), f"camera:{camera}", f"camera{camera}"))
    if not sources:
        raise utils.UserError("nothing to do: give image / video files or folders, or --camera N")
    return sources


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image, failing early with a one-line error naming the file (reads the header only)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise utils.UserError(f"cannot read image {path}: {err}") from None


def check_video(cv2: Any, path: str) -> None:
    """Fail early, naming the file, when OpenCV cannot open a video or decode its first frame."""
    capture = cv2.VideoCapture(path)
    opened = capture.isOpened()
    decoded = opened and capture.read()[0]
    capture.release()
    if not opened:
        raise utils.UserError(f"cannot open video {path} (not a video, damaged, or a codec OpenCV lacks)")
    if not decoded:
        raise utils.UserError(f"cannot read video {path}: no frame could be decoded")


def input_problem(src: realtime.Source, cv2: Any) -> str | None:
    """Why an input cannot be read, as its one-line error, or None. Images are decoded whole (at reduced scale for
    JPEGs), so a truncated file is caught here, not halfway through a batch."""
    try:
        if src.kind == "image":
            image_size(src.path)  # the header: not an image, or over Pillow's decompression-bomb limit
            data.load_face(data.Sample(path=src.name, file=src.path, label=0, box=None, line=0), CHECK_SIZE)
        elif src.kind == "video":
            check_video(cv2, src.path)
    except utils.UserError as err:
        return str(err)
    return None


def read_rgb(path: str, max_side: int) -> tuple[np.ndarray, float]:
    """The image as uint8 RGB for the detector (JPEGs decoded at reduced scale, >= max_side px) and the factor
    from its pixels back to the full image's."""
    try:
        with Image.open(path) as im:
            full_w = im.size[0]
            im.draft("RGB", (max_side, max_side))  # no-op for formats other than JPEG
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise utils.UserError(f"cannot read image {path}: {err}") from None
    return rgb, full_w / rgb.shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

def predict_images(sources: Sequence[realtime.Source], model: torch.nn.Module, device: torch.device, img_size: int,
                   grayscale: bool, classes: Sequence[str], args: argparse.Namespace,
                   detector: detectors.FaceDetector | None, names: expressions.OutputNames | None) -> list[list[Any]]:
    """CSV rows for image sources; faces read through data.FaceDataset and models.predict_logits (as evaluate.py)."""
    samples: list[data.Sample] = []
    faces: list[tuple[int, detectors.Box]] = []  # per sample: its source and the box reported for it
    meter = utils.Progress(len(sources), "detecting faces") if detector is not None else None
    for i, src in enumerate(sources):
        width, height = image_size(src.path)
        if detector is None:
            boxes, crops = [(0, 0, width, height)], [None]
        else:
            rgb, scale = read_rgb(src.path, detector.max_side)
            boxes = [tuple(round(v * scale) for v in box) for box in detector(rgb)]
            crops = [expressions.expand_box(box, args.margin, width, height) for box in boxes]
            meter.step()
        # line=0: these samples come from no CSV; label 0 is a placeholder the model never sees.
        samples += [data.Sample(path=src.name, file=src.path, label=0, box=crop, line=0) for crop in crops]
        faces += [(i, box) for box in boxes]
    if detector is not None:
        without = len(sources) - len({i for i, _ in faces})
        print(f"{len(faces)} faces in {len(sources)} images ({without} without a face)", flush=True)
    probs = np.zeros((0, len(classes)))
    if samples:
        loader = data.make_loader(data.FaceDataset(samples, img_size, grayscale=grayscale), args.batch_size,
                                  args.workers)
        logits, _ = models.predict_logits(model, loader, device, amp=args.amp, hflip=args.tta == "hflip",
                                          progress="images")
        probs = torch.softmax(logits, dim=1).double().numpy()
    rows = [expressions.csv_row(sources[i].name, 0, "", box, p, classes) for (i, box), p in zip(faces, probs)]
    if names is not None:
        drawn: dict[int, list[tuple[detectors.Box, str]]] = {}
        for (i, box), p in zip(faces, probs):
            drawn.setdefault(i, []).append((box, expressions.caption(p, classes)))
        for i, src in enumerate(sources):
            _save_annotated(src, drawn.get(i, []), names)
    return rows


def _save_annotated(src: realtime.Source, faces: list[tuple[detectors.Box, str]],
                    names: expressions.OutputNames) -> None:
    """Write OUT/annotated/<name> with the faces drawn (JPEG stays JPEG, anything else becomes PNG)."""
    suffix = Path(src.path).suffix.lower()
    jpeg = suffix in (".jpg", ".jpeg")
    path = names(src.rel, suffix if jpeg else ".png")
    with Image.open(src.path) as im:
        annotated = expressions.draw_faces(im, faces)
    with utils.atomic_write(path, "wb") as f:
        annotated.save(f, format="JPEG" if jpeg else "PNG", quality=95)


# ---------------------------------------------------------------------------------------------------------------------
# End-to-end measurement: --benchmark
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineMode:
    """How --benchmark runs the model in one mode: the .pt checkpoint (eager, or models.make_fast with fast) or an
    exported .onnx run by ONNX Runtime, which `export` makes in memory from the checkpoint when no file is given."""

    onnx: bool
    fast: bool = False
    export: Callable[[str, torch.device], torch.nn.Module] | None = None
    precision: str = "float32"  # what an .onnx file given to the mode must hold (its metadata's precision)


def export_in_memory(ckpt: str, device: torch.device) -> torch.nn.Module:
    """The checkpoint exported exactly as export.py exports it, kept in memory and run by ONNX Runtime."""
    model, meta = models.load_model(ckpt, "cpu")
    arch = meta["arch"]
    blob = onnx_model.export_bytes(model.float(), arch, meta["experiment"], meta["metrics"], models.arch_img_size(arch))
    return onnx_model.OnnxModel(blob, device).eval()


# What realtime.json and .md name as a mode's model when the checkpoint was exported in memory (no MODE=FILE).
IN_MEMORY = "the checkpoint, exported in memory"
# --benchmark's modes; MODE=FILE gives a mode its model file. A new mode is one entry. int8 needs its file
# (export.py --int8): quantising needs calibration faces, which a checkpoint does not carry.
PIPELINE_MODES: dict[str, PipelineMode] = {
    "eager": PipelineMode(onnx=False),
    "fast": PipelineMode(onnx=False, fast=True),
    "onnx": PipelineMode(onnx=True, export=export_in_memory),
    "int8": PipelineMode(onnx=True, precision="int8"),
}


def benchmark_modes(text: str) -> list[tuple[str, str | None]]:
    """argparse type: comma-separated modes, each MODE or MODE=FILE, e.g. eager,fast,onnx=model.onnx."""
    modes = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        mode, _, file = item.partition("=")
        if mode not in PIPELINE_MODES:
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}: choose from {', '.join(PIPELINE_MODES)}")
        modes.append((mode, file or None))
    if not modes:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(PIPELINE_MODES)}")
    return modes


def _mode_file(mode: str, file: str | None, ckpt: str) -> str | None:
    """The model file a --benchmark mode runs (None: export the checkpoint in memory), checked before any run."""
    spec, path = PIPELINE_MODES[mode], file or ckpt
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if spec.onnx:
        onnx_model.require(f"--benchmark {mode}")  # a missing install fails now, not after the other modes' passes
    if spec.onnx and file is None and not is_onnx and spec.export is not None:
        return None
    if is_onnx != spec.onnx:
        raise utils.UserError(f"--benchmark {mode}: runs {'an .onnx model' if spec.onnx else 'a .pt checkpoint'}, "
                              f"not {path}" + (f"; give one as {mode}=MODEL.onnx" if spec.onnx else ""))
    if spec.onnx and onnx_model.load_any(path)[1]["precision"] != spec.precision:
        raise utils.UserError(f"--benchmark {mode}: {path} is not a {spec.precision} model (see its metadata's "
                              "precision)")
    return path


def _mode_model(mode: str, path: str | None, ckpt: str, device: torch.device) -> tuple[torch.nn.Module, dict, bool]:
    """The model, its meta and whether to compile it, for one --benchmark mode running `path` (_mode_file)."""
    if path is None:
        print(f"{mode}: exporting {ckpt} to ONNX in memory", flush=True)
        model = PIPELINE_MODES[mode].export(ckpt, device)
        return model, onnx_model.meta_of(model, f"{ckpt} (exported in memory)"), False
    model, meta = onnx_model.load_any(path, device)
    return model, meta, PIPELINE_MODES[mode].fast


def run_benchmark(src: realtime.Source, cv2: Any, detector: detectors.FaceDetector, ckpt: str, device: torch.device,
                  args: argparse.Namespace, out_dir: Path) -> list[dict[str, Any]]:
    """The pipeline on one video once per --benchmark mode (plus, with --detect-every K > 1, the first mode with
    detection on every frame, the reference for faces kept and labels agreeing); writes OUT/realtime.md, .json."""
    runs = [(mode, _mode_file(mode, file, ckpt), args.detect_every) for mode, file in args.benchmark]
    if args.detect_every > 1:
        runs.insert(0, (runs[0][0], runs[0][1], 1))
    results, reference, classes = [], None, None
    for mode, path, every in runs:
        model, meta, fast = _mode_model(mode, path, ckpt, device)
        arch = meta["arch"]
        if classes is not None and list(models.arch_classes(arch)) != classes:
            raise utils.UserError(f"--benchmark {mode}: {path} has other classes than the first mode's model")
        classes, img_size = list(models.arch_classes(arch)), models.arch_img_size(arch)
        classifier = expressions.FaceClassifier(model, device, img_size, fast=fast, hflip=args.tta == "hflip",
                                                amp=args.amp)
        classifier.warm_up(1)
        transform = functools.partial(data.face_tensor, size=img_size, grayscale=models.arch_grayscale(arch))
        run_args = argparse.Namespace(**{**vars(args), "detect_every": every, "show": False})
        rows, stats = realtime.predict_video(src, cv2, classifier, detector, transform, classes, run_args, None)
        print(stats.summary(f"{mode}, whole-frame detection every {every}"), flush=True)
        reference = rows if reference is None else reference
        kept, agree = realtime.agreement(reference, rows)
        results.append({
            "mode": mode, "model": path or IN_MEMORY, "runtime": classifier.describe(),
            "detect_every": every,
            "track": args.track, "frames": stats.frames, "dropped": stats.dropped, "faces": stats.faces,
            "whole_frame_detections": stats.whole, "detector_ms": 1000 * stats.detect_s / max(stats.analysed, 1),
            "model_ms": 1000 * stats.model_s / stats.model_calls if stats.model_calls else None,
            "fps": stats.fps(), "p50_ms": stats.latency_ms(50), "p95_ms": stats.latency_ms(95),
            "faces_kept": kept, "labels_agree": agree})
        del model, classifier
        if stats.stopped:
            break
    _write_benchmark(results, src, cv2, detector, ckpt, device, args, out_dir)
    return results


def _write_benchmark(results: list[dict[str, Any]], src: realtime.Source, cv2: Any, detector: detectors.FaceDetector,
                     ckpt: str, device: torch.device, args: argparse.Namespace, out_dir: Path) -> None:
    """OUT/realtime.json and realtime.md: the table, the machine and the settings it was measured with."""
    capture, fps_in, total = realtime.open_capture(cv2, src)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    total = min(total, args.max_frames) if args.max_frames else total
    setting = {"video": src.name, "size": f"{size[0]}x{size[1]}", "frames": total, "fps": fps_in,
               "realtime": args.realtime, "detector": detector.name, "min_face": args.min_face,
               "max_side": args.max_side, "track": args.track, "device": models.device_name(device),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__,
               "opencv_threads": cv2.getNumThreads(), "command": " ".join(["python", *sys.argv])}
    utils.write_json(out_dir / "realtime.json", {"setting": setting, "rows": results})

    def pct(value: float | None) -> str:
        return "" if value is None or value != value else f"{100 * value:.1f} %"

    lines = [f"End to end on {src.name} ({setting['size']}, {total} frames at {fps_in:g} fps"
             + (", played in real time" if args.realtime else ", every frame") + f"); detector {detector.name} "
             f"(min face {args.min_face} px, max side {args.max_side} px), --track {args.track}. Machine: "
             f"{setting['device']}, {setting['cpu_capability']}; torch {torch.__version__}, {setting['torch_threads']} "
             f"threads; OpenCV {cv2.__version__}, {setting['opencv_threads']} threads.", "",
             "| mode | detection every | FPS end to end | p50 / p95 latency ms | detector ms/frame | model ms/frame "
             "| faces kept | labels agree | frames (dropped) |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results):
        model_ms = "" if r["model_ms"] is None else f"{r['model_ms']:.1f}"
        given = r["model"] not in (ckpt, IN_MEMORY)
        mode = r["mode"] + (f"={r['model']}" if given else "") + (" (reference)" if i == 0 else "")
        lines.append(f"| {mode} | {r['detect_every']} | {r['fps']:.1f} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
                     f"| {r['detector_ms']:.1f} | {model_ms} | {pct(r['faces_kept'])} | {pct(r['labels_agree'])} "
                     f"| {r['frames']} ({r['dropped']}) |")
    lines += ["", "Faces kept: of the faces the reference (detection on every frame) found, the share found in the "
              f"same frame (IoU >= {realtime.KEPT_IOU}); labels agree: of those, the share with the same label. "
              f"Command: `{setting['command']}`"]
    text = "\n".join(lines) + "\n"
    with utils.atomic_write(out_dir / "realtime.md") as f:
        f.write(text)
    print(text + f"wrote {out_dir / 'realtime.md'} and realtime.json", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, video files, or folders (searched recursively for both)")
    p.add_argument("--ckpt", default=None,
                   help="checkpoint written by train.py (best.pt), or a model exported by export.py (.onnx), which "
                        "ONNX Runtime runs (default: the released FER2013 model, pretrained/fer2013.pt)")
    p.add_argument("--camera", type=int, default=None, metavar="N",
                   help="also read camera N (OpenCV index); stop with Ctrl-C, q in the --show window, or --max-frames")
    p.add_argument("--detect", action="store_true",
                   help="images: find faces first (default: each image is one face crop); videos always detect")
    p.add_argument("--detector", choices=tuple(detectors.DETECTORS), default=detectors.DEFAULT,
                   help=f"face detector for --detect, videos and the camera (default: {detectors.DEFAULT}; "
                        "see detectors.py)")
    p.add_argument("--tta", choices=("none", "hflip"), default="none",
                   help="hflip: average the logits of each face and its mirror")
    p.add_argument("--annotate", action="store_true",
                   help="also write copies with boxes and labels drawn to OUT/annotated/ (videos as mp4)")
    p.add_argument("--show", action="store_true",
                   help="videos and camera: show the annotated frames in a window; q in it ends (needs OpenCV with "
                        "a GUI, not the -headless wheel)")
    p.add_argument("--out", default="results/predict", help="output folder (default: results/predict)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="float16 autocast on CUDA, as evaluate.py (default: on; no effect on CPU)")
    p.add_argument("--fast", choices=("auto", "on", "off"), default="auto",
                   help="videos: models.make_fast compiled path; auto = on for CUDA, off on CPU, where compiling "
                        "takes 10-20 s per face count for ~1.2x (worth it for long videos); not for an .onnx "
                        "model (default: auto)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch for image inputs (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="image decoding workers (default: 2)")
    p.add_argument("--smooth", type=float, default=0.6, metavar="ALPHA",
                   help="videos: p = ALPHA * p_previous + (1 - ALPHA) * p_frame per tracked face; 0 = off "
                        "(default: 0.6)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: analyse every N-th frame (default: 1)")
    p.add_argument("--detect-every", type=int, default=DETECT_EVERY, metavar="K",
                   help="videos and camera: search the whole frame for faces every K-th analysed frame and follow "
                        f"the faces found in between (--track); 1 = every frame (default: {DETECT_EVERY})")
    p.add_argument("--track", choices=tuple(realtime.TRACKS), default=realtime.DEFAULT_TRACK,
                   help="between whole-frame searches: near = search again only around each face's last box, with a "
                        "whole-frame search as soon as one is lost; hold = keep the last boxes "
                        f"(default: {realtime.DEFAULT_TRACK})")
    p.add_argument("--realtime", action="store_true",
                   help="video files: play at the file's frame rate as a camera would deliver it, always taking the "
                        "newest frame and dropping the ones the pipeline had no time for (default: every frame is "
                        "analysed, as fast as the machine goes; a camera always drops)")
    p.add_argument("--max-frames", type=int, default=0, metavar="N",
                   help="videos and camera: stop after N frames (default: 0 = all)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="detected faces: crop this fraction of the box more on each side (default: 0.2)")
    p.add_argument("--min-face", type=int, default=40, metavar="PX", help="smallest face to detect (default: 40)")
    p.add_argument("--max-side", type=int, default=640, metavar="PX",
                   help="the detector searches images and frames scaled down to at most PX on their longer side "
                        "(default: 640)")
    p.add_argument("--benchmark", type=benchmark_modes, default=None, metavar="MODES",
                   help="measure the pipeline end to end on one video file, once per mode, instead of predicting: "
                        f"a comma-separated list of {', '.join(PIPELINE_MODES)}, each optionally =MODEL_FILE; "
                        "writes OUT/realtime.md and .json (see docs/export.md)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check by type."""
    for flag, value, ok in (("--batch-size", args.batch_size, args.batch_size >= 1),
                            ("--workers", args.workers, args.workers >= 0),
                            ("--every", args.every, args.every >= 1),
                            ("--detect-every", args.detect_every, args.detect_every >= 1),
                            ("--max-frames", args.max_frames, args.max_frames >= 0),
                            ("--smooth", args.smooth, 0.0 <= args.smooth < 1.0),
                            ("--margin", args.margin, 0.0 <= args.margin <= 1.0),
                            ("--min-face", args.min_face, args.min_face >= 1),
                            ("--max-side", args.max_side, args.max_side >= 32)):
        if not ok:
            raise utils.UserError(f"{flag} {value}: out of range (see --help)")


def _readable_inputs(args: argparse.Namespace, out_dir: Path) -> tuple[list[realtime.Source], Any, list[str]]:
    """The inputs that can be read, OpenCV (None when nothing needs it) and one line per input that cannot.
    A single input that cannot be read is a UserError of its own (nothing else to do)."""
    sources = collect_sources(args.inputs, args.camera, out_dir)
    videos = [s for s in sources if s.kind != "image"]
    # OpenCV is checked before the model loads, so a missing install costs the user no waiting.
    cv2 = None
    if videos:
        cv2 = detectors.import_cv2("--camera" if videos[0].kind == "camera" else f"video input {videos[0].name}")
    if args.detect:
        cv2 = detectors.import_cv2("--detect")
    if args.show:
        realtime.check_window(detectors.import_cv2("--show"))
    # Unreadable inputs are found before the model loads; one bad file among many does not stop the others.
    problems = {src: problem for src in sources if (problem := input_problem(src, cv2)) is not None}
    if problems and len(sources) == 1:
        raise utils.UserError(problems[sources[0]])
    for problem in problems.values():
        print(f"skipped: {problem}", file=sys.stderr, flush=True)
    readable = [s for s in sources if s not in problems]
    if not readable:
        raise utils.UserError(f"none of the {len(sources)} inputs could be read (each named above)")
    return readable, cv2, list(problems.values())


def main(args: argparse.Namespace) -> None:
    """Predict on every input and write OUT/predictions.csv (+ annotated copies); or --benchmark."""
    _check_args(args)
    ckpt = args.ckpt or str(RELEASED_MODEL)
    if args.ckpt is None:
        print(f"no --ckpt: using the released FER2013 model {RELEASED_MODEL} (7 classes, 48 px grayscale; see "
              "pretrained/README.md)", flush=True)
    out_dir = Path(args.out)
    onnx = Path(ckpt).suffix.lower() == ".onnx"
    if onnx and args.fast == "on":
        raise utils.UserError("--fast on: the compiled path is for .pt checkpoints; an .onnx model runs through "
                              "ONNX Runtime (drop --fast)")
    sources, cv2, problems = _readable_inputs(args, out_dir)
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind != "image"]
    detector = (detectors.build(args.detector, cv2, min_face=args.min_face, max_side=args.max_side)
                if cv2 is not None else None)
    device = models.resolve_device(args.device)
    if args.benchmark is not None:
        if problems or len(sources) != 1 or sources[0].kind != "video":
            raise utils.UserError("--benchmark measures one video file: give exactly one (e.g. the test clip, "
                                  "python datasets.py clip --out clip.mp4)")
        run_benchmark(sources[0], cv2, detector, ckpt, device, args, out_dir)
        return

    model, meta = onnx_model.load_any(ckpt, device)
    arch = meta["arch"]
    img_size = models.arch_img_size(arch)
    classes = list(models.arch_classes(arch))
    names = expressions.OutputNames(out_dir / "annotated") if args.annotate else None
    print(f"{ckpt}: {arch['name']} at {img_size} px on {device}; {len(images)} images, {len(videos)} videos"
          + (f"; faces found by {detector.name}" if detector is not None and (videos or args.detect) else ""),
          flush=True)

    grayscale = models.arch_grayscale(arch)
    rows = predict_images(images, model, device, img_size, grayscale, classes, args,
                          detector if args.detect else None, names) if images else []
    stopped = None  # the video file Ctrl-C or q cut short, if one was
    if videos:
        classifier = expressions.FaceClassifier(model, device, img_size,
                                                fast=not onnx and expressions.use_fast_path(args.fast, device),
                                                hflip=args.tta == "hflip", amp=args.amp)
        classifier.warm_up(1)  # the common case, one face, is ready before the clock starts
        print(f"model path: {classifier.describe()} (ready in {classifier.warmup_s:.1f} s)", flush=True)
        transform = functools.partial(data.face_tensor, size=img_size, grayscale=grayscale)
        for i, src in enumerate(videos):
            video_rows, stats = realtime.predict_video(src, cv2, classifier, detector, transform, classes, args, names)
            rows += video_rows
            print(stats.summary(src.name), flush=True)
            if stats.stopped:  # Ctrl-C or q ends the session: the rest is skipped
                stopped = (src, stats.frames, len(videos) - i - 1)
                break

    csv_path = out_dir / "predictions.csv"
    utils.write_csv(csv_path, expressions.csv_columns(classes), rows)
    print(f"wrote {csv_path} ({len(rows)} rows)" + (f" and annotated copies in {names.root}" if names else ""),
          flush=True)
    if stopped is not None and (stopped[0].kind != "camera" or stopped[2]):
        raise utils.UserError(f"stopped by Ctrl-C or q after {stopped[1]} frames of {stopped[0].name}"
                              + (f" ({stopped[2]} more videos skipped)" if stopped[2] else "")
                              + f"; {csv_path} holds every frame analysed up to there")
    if problems:
        raise utils.UserError(f"{len(problems)} of {len(problems) + len(sources)} inputs could not be read (each "
                              f"named above); {csv_path} holds the other {len(sources)}")


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
