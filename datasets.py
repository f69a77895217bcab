"""The data commands: convert a dataset layout (converters.py), check an index CSV, crop its faces once (prepare),
measure the loader (bench), write the synthetic demo set (demo.py), write the real-time test clip (realtime.py).

    python datasets.py {check,prepare,bench,demo,clip,affectnet,affectnet-npy,folder,rafdb,fer2013,ferplus} --help
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import converters
import data
import demo
import detectors
import realtime
from utils import AFFECTNET8, DEFAULT_IMG_SIZE, UserError, int_at_least, run_cli, write_json


class Renamed(argparse.Action):
    """A flag's old spelling (const: the new one): refused with a one-line pointer and exit 2, as argparse's errors."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.exit(2, f"error: {option_string} was renamed {self.const}\n")


def get_args_parser() -> argparse.ArgumentParser:
    """Sub-commands: check, one per dataset layout (converters.LAYOUTS), demo, prepare, bench."""
    parser = argparse.ArgumentParser(description="Index CSVs: convert a dataset, check, demo set, loader benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate an index CSV, print the class table and focal alpha")
    p.add_argument("--csv", required=True, help="index CSV (path,label[,face_x,face_y,face_width,face_height])")
    p.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    files = p.add_mutually_exclusive_group()
    files.add_argument("--decode", action="store_true", help="also decode every image on all cores")
    files.add_argument("--no-files", action="store_true", help="check the CSV and counts only, not the image files")
    p.add_argument("--img-size", type=int_at_least(1), default=DEFAULT_IMG_SIZE,
                   help="input size S, for --decode's reduced-scale decoding")

    for name, (summary, flags, convert) in converters.LAYOUTS.items():
        p = sub.add_parser(name, help=summary)
        for names, options in flags:
            p.add_argument(*names, **options)
        p.set_defaults(convert=convert)

    p = sub.add_parser("demo", help="write the synthetic demo set (train.csv, val.csv, images)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int_at_least(0), default=42)
    p.add_argument("--min-train-per-class", type=int_at_least(1), default=24,
                   help="size of the smallest training class")
    p.add_argument("--val-per-class", type=int_at_least(1), default=30)
    p.add_argument("--img-size", type=int_at_least(16), default=96)
    p.add_argument("--image-size", action=Renamed, const="--img-size", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--balanced", action="store_true",
                   help="every training class has --min-train-per-class images (default: Table 2's proportions)")

    p = sub.add_parser("clip", help="write the 640 x 480 test clip predict.py --benchmark runs on: a camera moving "
                                     "over scikit-image's astronaut portrait (needs OpenCV and scikit-image)")
    p.add_argument("--out", required=True, help="the video file to write (.mp4)")
    p.add_argument("--frames", type=int_at_least(1), default=300, help="frames (default: 300, 10 s)")
    p.add_argument("--fps", type=int_at_least(1), default=30, help="frames per second (default: 30)")

    p = sub.add_parser("prepare", help="crop every face once, ahead of training (full-release photos: always)")
    p.add_argument("--csv", required=True, help="index CSV with face boxes (e.g. from `datasets.py affectnet`)")
    p.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    p.add_argument("--out", required=True, help="folder for the crops, index.csv and classes.txt")
    p.add_argument("--img-size", type=int_at_least(1), default=DEFAULT_IMG_SIZE,
                   help=f"crop side in px (default: {DEFAULT_IMG_SIZE}, the thesis's)")
    p.add_argument("--size", action=Renamed, const="--img-size", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int_at_least(1), default=None, help="processes (default: all cores)")

    p = sub.add_parser("bench", help="training-input images/s per core: plain torchvision vs ours, + batch jitter")
    p.add_argument("--csv", required=True)
    p.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    p.add_argument("--img-size", type=int_at_least(1), default=DEFAULT_IMG_SIZE)
    p.add_argument("--limit", type=int_at_least(1), default=500, help="first N rows (default 500)")
    p.add_argument("--workers", type=int_at_least(0), default=0,
                   help="DataLoader workers for ours (default 0: the per-core rate)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64)
    p.add_argument("--rounds", type=int_at_least(1), default=3, help="interleaved rounds; the best of each is reported")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return parser


def main(args: argparse.Namespace) -> None:
    """Run one sub-command; bad input raises UserError."""
    if args.command == "check":
        problems = data.check_index(args.csv, args.data_root, files=not args.no_files, decode=args.decode,
                                    img_size=args.img_size)
        if problems:
            # Every problem is counted; the listing stops at 100 so a wholly wrong file stays readable.
            for problem in problems[:100]:
                print(f"problem: {problem}")
            if len(problems) > 100:
                print(f"... and {len(problems) - 100} more problems")
            raise UserError(f"{len(problems)} problem(s) in {args.csv}; first: {problems[0]}")
        print(f"ok: {args.csv}")
    elif hasattr(args, "convert"):
        converters.report(args.convert(args))
    elif args.command == "demo":
        start = time.perf_counter()
        train_csv, val_csv = demo.make_demo(args.out, args.seed, args.min_train_per_class, args.val_per_class,
                                            args.img_size, args.balanced)
        counts = demo.demo_counts(args.min_train_per_class, args.balanced)
        print(f"wrote {train_csv} ({sum(counts)} images: " + ", ".join(f"{n} {c}" for n, c in zip(counts, AFFECTNET8))
              + f") and {val_csv} ({args.val_per_class * len(AFFECTNET8)} images) "
              f"in {time.perf_counter() - start:.1f}s")
    elif args.command == "clip":
        cv2 = detectors.import_cv2("datasets.py clip")
        realtime.write_clip(cv2, args.out, args.frames, args.fps)
        print(f"wrote {args.out} ({args.frames} frames, {realtime.CLIP_SIZE[0]} x {realtime.CLIP_SIZE[1]} at "
              f"{args.fps} fps)")
    elif args.command == "prepare":
        written, skipped, problems = data.prepare(args.csv, args.out, args.data_root, args.img_size, args.workers)
        print(f"prepared {written} crops, {skipped} already there; wrote {Path(args.out) / 'index.csv'}")
        if problems:
            raise UserError(f"{len(problems)} image(s) could not be read (each named above); index.csv lists the "
                            "others; fix or drop those rows and run prepare again (finished crops are kept)")
        print(f"next: train with --train-csv {Path(args.out) / 'index.csv'} (no --data-root)")
    elif args.command == "bench":
        r = data.bench(args.csv, args.data_root, args.img_size, args.limit, args.workers, args.batch_size,
                       args.rounds)
        print(f"{r['images']} images at {args.img_size} px, one core, best of {args.rounds} rounds:")
        print(f"  plain torchvision (PIL decode, Resize, flip, ColorJitter, ToTensor, Normalize): "
              f"{r['reference_per_core']:.1f} images/s")
        print(f"  ours, loader side (reduced-scale decode, crop, resize, uint8): {r['ours_per_core']:.1f} images/s "
              f"= {r['speedup']:.1f}x")
        print(f"  ours, batch flip + colour jitter + normalise on this CPU: {r['batch_augment_ms_per_image']:.3f} ms "
              "per image (on a GPU it runs on the training device)")
        if args.json:
            write_json(args.json, r)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
