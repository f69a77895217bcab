"""int8 (export.py --int8, onnx_model.quantize_int8 / int8_agreement, benchmark.py --mode int8) on real photos:
the checked model is written and loads like any export; one that disagrees with float32 is refused."""
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import benchmark
import data
import export
import models
import onnx_model
import utils

onnx = pytest.importorskip("onnx", reason="ONNX tests need: pip install -r requirements-onnx.txt")
for _package in ("onnxruntime", "onnxscript"):
    pytest.importorskip(_package, reason="ONNX tests need: pip install -r requirements-onnx.txt")
skimage_data = pytest.importorskip("skimage.data", reason="the real photos come from scikit-image")

# Real photos shipped with scikit-image (a face, a cat, objects, textures, a microscope and a telescope image).
PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket", "coins", "moon", "immunohistochemistry",
          "hubble_deep_field", "brick", "grass", "gravel")
# The graded photos are those whose float32 top two logits are at least this far apart: int8 moves these logits by
# up to ~0.04, so a photo closer to a tie could flip under any quantisation and say nothing about this one.
MARGIN = 0.15
# Of the seeds tried, one whose float32 model gives the clear-margin photos several classes, so a broken int8 model
# (one answer for everything) cannot agree with it by luck.
SEED = 4
IMG_SIZE = 48


def run_export(*argv: object) -> None:
    """export.py's main() in this process, as the CLI would call it."""
    export.main(export.get_args_parser().parse_args([str(a) for a in argv]))


def write_index(path: Path, rows: list[tuple[str, int]]) -> Path:
    """An index CSV (path,label) in the project's format; AffectNet-8 classes (no classes.txt)."""
    utils.write_csv(path, ["path", "label"], rows)
    return path


def photo_logits(model: torch.nn.Module, csv: Path) -> torch.Tensor:
    """The model's logits on a CSV's photos, read as the export's checks read them (48 px grayscale faces)."""
    loader = data.make_loader(data.FaceDataset(data.read_index(csv), IMG_SIZE, grayscale=True), 16, 0)
    return models.predict_logits(model, loader, "cpu")[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A grayscale 48 px vgg_face48 checkpoint (the released model's kind; random weights, BatchNorm statistics
    from the photos), calib.csv (all photos as JPEGs), val.csv (the clear-margin photos labelled with the float
    model's answers, so agreeing with float32 is scoring 100 %) and export.py's float32 and int8 files."""
    folder = tmp_path_factory.mktemp("int8")
    for name in PHOTOS:
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(folder / f"{name}.jpg", quality=90)
    calib = write_index(folder / "calib.csv", [(f"{name}.jpg", 0) for name in PHOTOS])
    torch.manual_seed(SEED)
    model = models.build_model("vgg_face48", num_classes=len(utils.AFFECTNET8), weights="none")
    images = next(iter(data.make_loader(data.FaceDataset(data.read_index(calib), IMG_SIZE, grayscale=True), 64, 0)))[0]
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batch
    with torch.no_grad():  # statistics of real images and their mirrors, as training would set them
        x = models.normalize(images)
        model.train()(torch.cat([x, x.flip(3)]))
    model.eval()
    arch = {"name": "vgg_face48", "blocks": 1, "num_classes": len(utils.AFFECTNET8), "img_size": IMG_SIZE,
            "classes": list(utils.AFFECTNET8), "grayscale": True}
    models.save_checkpoint(folder / "best.pt", model, arch, "vgg_face48_int8_test", metrics={"accuracy": 0.5})
    logits = photo_logits(model, calib)
    top2 = logits.topk(2, dim=1).values
    clear = [(f"{name}.jpg", int(label)) for name, label, gap in zip(PHOTOS, logits.argmax(1), top2[:, 0] - top2[:, 1])
             if gap >= MARGIN]
    assert len(clear) >= 6 and len({label for _, label in clear}) >= 3, clear  # the premise of the refusal test
    val = write_index(folder / "val.csv", clear)
    run_export("--ckpt", folder / "best.pt", "--out", folder / "model.onnx", "--int8", folder / "model_int8.onnx",
               "--calib-csv", calib, "--val-csv", val, "--batch-size", 4)
    return {"folder": folder, "ckpt": folder / "best.pt", "calib": calib, "val": val,
            "float": folder / "model.onnx", "int8": folder / "model_int8.onnx"}


def test_int8_export_loads_like_any_export_and_keeps_the_float_argmax(photos):
    float_model, float_meta = onnx_model.load_any(photos["float"])
    int8_model, meta = onnx_model.load_any(photos["int8"])  # the path predict.py and evaluate.py take
    assert isinstance(int8_model, onnx_model.OnnxModel) and int8_model.runtime.endswith(", int8")
    assert meta["arch"] == float_meta["arch"] and meta["arch"]["grayscale"] is True and meta["arch"]["img_size"] == 48
    assert (meta["precision"], float_meta["precision"]) == ("int8", "float32")
    assert meta["experiment"] == "vgg_face48_int8_test" and meta["mean"] == float_meta["mean"]
    check = meta["int8_check"]
    graded = len(data.read_index(photos["val"]))
    assert check["ok"] and check["images"] == graded and check["argmax_agree"] == graded
    assert check["float32"]["accuracy"] == 1.0 and check["tolerance"] == onnx_model.INT8_TOLERANCE
    assert (check["calib_csv"], check["calib_images"]) == (str(photos["calib"]), len(PHOTOS))
    # Really int8 inside: quantised convolutions, int8 weights, a quarter of the float file.
    proto = onnx.load(str(photos["int8"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in proto.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)
    assert photos["int8"].stat().st_size < photos["float"].stat().st_size / 2
    # On every photo, graded or not (a batch size the check did not use), the logits stay close to float32's.
    float_logits, int8_logits = photo_logits(float_model, photos["calib"]), photo_logits(int8_model, photos["calib"])
    assert (int8_logits - float_logits).abs().max() < MARGIN / 2
    graded_rows = photo_logits(float_model, photos["val"]), photo_logits(int8_model, photos["val"])
    assert torch.equal(graded_rows[0].argmax(1), graded_rows[1].argmax(1))


def test_int8_that_disagrees_on_real_photos_is_refused_and_not_written(photos, tmp_path, monkeypatch):
    # Calibrated on one black image, every activation range is that of darkness: the photos' bright parts clip, the
    # int8 model answers differently from float32, and the export must refuse it.
    Image.new("RGB", (64, 64)).save(tmp_path / "black.png")
    black = write_index(tmp_path / "black.csv", [("black.png", 0)])
    float_bytes = photos["float"].read_bytes()
    monkeypatch.setattr(onnx_model, "export_bytes", lambda *args, **kwargs: float_bytes)  # skip the slow export
    with pytest.raises(utils.UserError) as refused:
        run_export("--ckpt", photos["ckpt"], "--out", tmp_path / "model.onnx", "--int8", tmp_path / "model_int8.onnx",
                   "--calib-csv", black, "--val-csv", photos["val"])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'model_int8.onnx'}: not written, int8 accuracy or macro-F1 is more than "
                              f"0.5 points from float32's: int8 on {photos['val']} (")
    assert "(float32 1.0000)" in message and f"({tmp_path / 'model.onnx'}, the float32 model, was written)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["black.csv", "black.png", "model.onnx"]  # no int8, no temp


def test_agreement_bound_is_a_parameter_and_counts_both_scores():
    labels = torch.arange(8) % 4  # 8 images, 4 classes
    right = torch.nn.functional.one_hot(labels, 4).float()
    one_wrong = right.clone()
    one_wrong[0] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # image 0 moves from class 0 to class 1
    classes = ["a", "b", "c", "d"]
    same = onnx_model.int8_agreement(labels, right, right.clone(), classes)
    assert same["ok"] and same["argmax_agree"] == 8 and same["gap"] == {"accuracy": 0.0, "macro_f1": 0.0}
    off = onnx_model.int8_agreement(labels, right, one_wrong, classes)
    assert off["gap"]["accuracy"] == pytest.approx(-1 / 8) and off["argmax_agree"] == 7 and not off["ok"]
    assert onnx_model.int8_agreement(labels, right, one_wrong, classes, tolerance=0.2)["ok"]
    # Accuracy alone within the bound is not enough: macro-F1 counts too.
    assert not onnx_model.int8_agreement(labels, right, one_wrong, classes, tolerance=0.13)["ok"]
    # A gain beyond the bound is refused as a loss is (the int8 model would be another model).
    assert not onnx_model.int8_agreement(labels, one_wrong, right, classes)["ok"]
    # Exactly the bound passes: 1 flip in 200 images is 0.5 points of accuracy (macro-F1 moves by 0.125); 2 fail.
    labels = torch.zeros(200, dtype=torch.long)
    logits = torch.tensor([[1.0, 0.0]]).repeat(200, 1)
    for flips, ok in ((1, True), (2, False)):
        flipped = logits.clone()
        flipped[:flips] = torch.tensor([0.0, 1.0])
        result = onnx_model.int8_agreement(labels, logits, flipped, ["a", "b"])
        assert result["gap"]["accuracy"] == pytest.approx(-flips / 200) and result["ok"] is ok


def test_int8_flags_fail_early_with_one_line(photos, tmp_path):
    common = ["--ckpt", photos["ckpt"], "--out", tmp_path / "m.onnx"]
    cases = [([*common, "--int8", tmp_path / "q.onnx", "--val-csv", photos["val"]], "--int8 needs --calib-csv"),
             ([*common, "--int8", tmp_path / "q.onnx"], "--int8 needs --calib-csv and --val-csv"),
             ([*common, "--calib-csv", photos["calib"]], "--calib-csv goes with --int8 PATH"),
             ([*common, "--int8", tmp_path / "m.onnx", "--calib-csv", photos["calib"], "--val-csv", photos["val"]],
              "the same file as --out"),
             (["--ckpt", photos["ckpt"], "--backbone-out", tmp_path / "b.pt", "--int8", tmp_path / "q.onnx",
               "--calib-csv", photos["calib"], "--val-csv", photos["val"]], "--int8 needs --out")]
    other = tmp_path / "other"
    other.mkdir()
    data.write_classes(other, ["calm", "joy"])
    (other / "a.jpg").write_bytes((photos["folder"] / "coins.jpg").read_bytes())
    seven = write_index(other / "val.csv", [("a.jpg", 0)])
    cases.append(([*common, "--int8", tmp_path / "q.onnx", "--calib-csv", photos["calib"], "--val-csv", seven],
                  f"--val-csv {seven}: classes calm, joy are not the model's"))
    for argv, message in cases:
        with pytest.raises(utils.UserError, match=re.escape(message)) as refused:
            run_export(*argv)
        assert "\n" not in str(refused.value)
    assert not list(tmp_path.glob("*.onnx"))


def bench(tmp_path: Path, *argv: object) -> list[dict]:
    """benchmark.main in this process, a few passes; returns benchmark.json's rows."""
    benchmark.main(benchmark.get_args_parser().parse_args(
        [str(a) for a in argv] + ["--warmup", "1", "--iters", "3", "--device", "cpu", "--out", str(tmp_path)]))
    return json.loads((tmp_path / "benchmark.json").read_text())


def test_benchmark_int8_rows_from_a_checked_file_and_from_random_calibration(photos, tmp_path):
    onnx_row, int8_row = bench(tmp_path / "file", "--ckpt", photos["ckpt"], "--mode", "onnx,int8",
                               "--onnx", photos["float"], "--int8", photos["int8"])
    assert (onnx_row["mode"], int8_row["mode"]) == ("onnx", "int8") and int8_row["latency_ms"] > 0
    assert int8_row["speedup_vs_onnx"] == pytest.approx(onnx_row["latency_ms"] / int8_row["latency_ms"])
    assert onnx_row["speedup_vs_onnx"] is None and str(photos["int8"]) in int8_row["onnx_runtime"]
    # The int8 row scores as the int8 model did in export.py's check, the onnx row as the checkpoint.
    check = onnx_model.load_any(photos["int8"])[1]["int8_check"]["int8"]
    assert (int8_row["accuracy"], int8_row["macro_f1"]) == (check["accuracy"], check["macro_f1"])
    assert onnx_row["accuracy"] == 0.5
    assert "x onnx) |" in (tmp_path / "file" / "benchmark.md").read_text()

    # Without --int8: the --onnx file quantised in memory on random inputs, for timing only, so no scores.
    _, row = bench(tmp_path / "memory", "--ckpt", photos["ckpt"], "--mode", "onnx,int8", "--onnx", photos["float"])
    assert row["mode"] == "int8" and row["onnx_runtime"].endswith("int8, calibrated on random inputs")
    assert row["accuracy"] is None and row["macro_f1"] is None and row["speedup_vs_onnx"] > 0


def test_benchmark_int8_flags_are_checked_before_any_timing(photos, tmp_path):
    ckpt = photos["ckpt"]
    cases = [(["--ckpt", ckpt, "--mode", "onnx", "--int8", photos["int8"]], "--int8: add int8 to --mode"),
             (["--model", "vgg_face48", "--mode", "int8", "--int8", photos["int8"]], "--int8 goes with --ckpt"),
             (["--ckpt", ckpt, "--mode", "int8", "--int8", photos["float"]],
              f"--int8 {photos['float']}: precision float32, --int8 takes int8 models (export.py --int8 writes them)"),
             (["--ckpt", ckpt, "--mode", "onnx", "--onnx", photos["int8"]],
              f"--onnx {photos['int8']}: precision int8, --onnx takes float32 models")]
    for argv, message in cases:
        with pytest.raises(utils.UserError, match=re.escape(message)):
            bench(tmp_path, *argv)
    assert not (tmp_path / "benchmark.json").exists()
