"""export.py and onnx_model.py: round trip per architecture, metadata, the refusal check, predict.py on an .onnx."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import export
import models
import onnx_model
import predict
import utils

onnx = pytest.importorskip("onnx", reason="ONNX tests need: pip install -r requirements-onnx.txt")
for _package in ("onnxruntime", "onnxscript"):
    pytest.importorskip(_package, reason="ONNX tests need: pip install -r requirements-onnx.txt")
from onnx import TensorProto, helper  # noqa: E402 (only once onnx is known to be installed)

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "pip install -r requirements-onnx.txt"
# docs/export.md's promise, as a literal: max |logit diff| <= 1e-3 x max(1, largest |eager logit|).
BOUND = 1e-3
# Every architecture: each backbone of the table, and the hybrid with one and two blocks. The two-block hybrid
# gets its own class list, so nothing assumes AffectNet's eight.
ARCHS = [(name, 1, list(utils.AFFECTNET8)) for name in models.MODEL_NAMES] + [
    (name, 2, ["calm", "joy", "grief", "shock", "dread"]) for name in models.HYBRIDS]


def save_ckpt(path: Path, name: str, blocks: int, classes: list[str], img_size: int) -> torch.nn.Module:
    """A random-weight checkpoint (seeded) whose BatchNorm statistics come from random images, as training sets
    them (with the initial ones, torchvision's EfficientNet and MobileNet give logits near 0, which would make
    any comparison pass); returns its model in eval mode."""
    torch.manual_seed(0)
    model = models.build_model(name, num_classes=len(classes), blocks=blocks, weights="none")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(32, 3, img_size, img_size))
    arch = {"name": name, "blocks": blocks, "num_classes": len(classes), "img_size": img_size, "classes": classes,
            "class_counts": list(range(5, 5 + len(classes))), "sampler": "shuffle"}
    models.save_checkpoint(path, model, arch, f"{name}_{blocks}_export_test", metrics={"accuracy": 0.25, "epoch": 3})
    return model.eval()


def run_export(*argv: object) -> None:
    """export.py's main() in this process, as the CLI would call it."""
    export.main(export.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.mark.parametrize("name, blocks, classes", ARCHS, ids=[f"{n}-{b}" for n, b, _ in ARCHS])
def test_round_trip_logits_argmax_and_metadata(tmp_path, name, blocks, classes):
    model = save_ckpt(tmp_path / "best.pt", name, blocks, classes, img_size=32)
    run_export("--ckpt", tmp_path / "best.pt", "--out", tmp_path / "model.onnx")

    exported, meta = onnx_model.load_any(tmp_path / "model.onnx")  # the path every script takes
    assert isinstance(exported, onnx_model.OnnxModel)
    assert meta["arch"] == {"name": name, "blocks": blocks, "num_classes": len(classes), "img_size": 32,
                            "classes": classes, "class_counts": list(range(5, 5 + len(classes))),
                            "sampler": "shuffle", "grayscale": False}  # what --logit-adjust and the input read
    assert meta["experiment"] == f"{name}_{blocks}_export_test" and meta["metrics"] == {"accuracy": 0.25, "epoch": 3}
    assert (meta["mean"], meta["std"], meta["opset"]) == (list(models.IMAGENET_MEAN), list(models.IMAGENET_STD), 18)
    # A batch size the export's own check did not use: the batch axis is dynamic, the logits agree.
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        reference, logits = model(x), exported(x)
    assert logits.shape == (5, len(classes)) and logits.dtype == torch.float32
    assert reference.std() > 0.1  # logits of a real spread, not a trivially passed comparison
    bound = BOUND * max(1.0, reference.abs().max().item())
    assert (logits - reference).abs().max().item() <= bound
    assert torch.equal(logits.argmax(1), reference.argmax(1))
    # Other ONNX tools see the same metadata and the symbolic batch dimension.
    proto = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == classes and props["img_size"] == "32" and props["model"] == name
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert not list(tmp_path.glob("*.data"))  # one self-contained file


def test_compare_bound_scales_with_the_logits_and_forgives_near_ties():
    tol = BOUND
    reference = torch.tensor([[10.0, 0.0, -3.0], [2.0, 2.0 + tol / 100, 0.0]])
    check = onnx_model.compare(reference, reference + torch.tensor([[5 * tol, 0, 0], [tol / 100, -tol / 100, 0]]))
    # 5 x tol is within tol x 10 (the largest |logit|); row 2's argmax flips inside a near-tie: no disagreement.
    assert check["bound"] == pytest.approx(10 * tol) and check["ok"]
    assert (check["argmax_agree"], check["argmax_real_disagree"]) == (1, 0)
    assert not onnx_model.compare(reference, reference + 20 * tol)["ok"]
    flipped = reference[:1, [1, 0, 2]]  # a clear argmax change, small values elsewhere
    assert onnx_model.compare(reference[:1], flipped)["argmax_real_disagree"] == 1


@pytest.fixture(scope="module")
def exported64(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight ConvNeXt-Tiny checkpoint at the demo set's 64 px and its export: (best.pt, model.onnx)."""
    folder = tmp_path_factory.mktemp("onnx")
    save_ckpt(folder / "best.pt", "convnext_tiny", 1, list(utils.AFFECTNET8), img_size=64)
    run_export("--ckpt", folder / "best.pt", "--out", folder / "model.onnx")
    return folder / "best.pt", folder / "model.onnx"


def reuse_export(monkeypatch, onnx_path: Path) -> None:
    """export.py's checks run for real on an exported model, without exporting again (the slow step)."""
    monkeypatch.setattr(onnx_model, "export_bytes", lambda *args, **kwargs: onnx_path.read_bytes())


def test_val_csv_check_and_predict_gives_the_checkpoints_labels(demo_data, exported64, tmp_path, capsys,
                                                                monkeypatch):
    _, val_csv = demo_data
    ckpt, onnx_path = exported64
    reuse_export(monkeypatch, onnx_path)
    run_export("--ckpt", ckpt, "--out", tmp_path / "checked.onnx", "--val-csv", val_csv, "--limit", 20)
    out = capsys.readouterr().out
    assert f"{val_csv} (first 20 images): max |logit diff|" in out and "argmax agrees on 20/20" in out

    rows = {}
    for kind, path in (("pt", ckpt), ("onnx", onnx_path)):
        predict.main(predict.get_args_parser().parse_args(
            [str(val_csv.parent / "val"), "--ckpt", str(path), "--out", str(tmp_path / kind), "--workers", "0",
             "--device", "cpu", "--tta", "hflip"]))
        with open(tmp_path / kind / "predictions.csv", newline="") as f:
            rows[kind] = {r["file"]: r for r in csv.DictReader(f)}
    assert len(rows["onnx"]) == len(rows["pt"]) == 32 and rows["onnx"].keys() == rows["pt"].keys()
    for file, want in rows["pt"].items():
        got = rows["onnx"][file]
        assert (got["label"], got["name"]) == (want["label"], want["name"])
        np.testing.assert_allclose([float(got[f"prob_{c}"]) for c in utils.AFFECTNET8],
                                   [float(want[f"prob_{c}"]) for c in utils.AFFECTNET8], atol=2e-6)


def test_evaluate_scores_an_onnx_like_its_checkpoint(demo_data, exported64, tmp_path):
    _, val_csv = demo_data
    found = {}
    for kind, path in zip(("pt", "onnx"), exported64):
        evaluate.main(evaluate.get_args_parser().parse_args(
            ["--ckpt", str(path), "--val-csv", str(val_csv), "--out", str(tmp_path / kind), "--workers", "0",
             "--device", "cpu"]))
        found[kind] = json.loads((tmp_path / kind / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1"):
        assert found["onnx"][key] == found["pt"][key]


def test_a_disagreeing_export_is_refused_and_not_written(exported64, tmp_path, monkeypatch):
    ckpt, onnx_path = exported64
    reuse_export(monkeypatch, onnx_path)
    real_forward = onnx_model.OnnxModel.forward
    monkeypatch.setattr(onnx_model.OnnxModel, "forward", lambda self, x: real_forward(self, x) + 0.01)
    with pytest.raises(utils.UserError, match=r"model.onnx: not written, ONNX Runtime disagrees with eager PyTorch on "
                                              r"random inputs .*max \|logit diff\| 1.0e-02"):
        run_export("--ckpt", ckpt, "--out", tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def one_line_error(*argv: str, block: str = "") -> str:
    """Run a script as the CLI does (optionally with modules blocked first); its single stderr line."""
    code = f"import runpy, sys\n{block}\nsys.argv = {list(argv)!r}\nrunpy.run_path({argv[0]!r}, run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_missing_packages_and_foreign_files_give_one_line_errors(exported64, tmp_path):
    ckpt64 = exported64[0]
    block = "sys.modules['onnxscript'] = None  # as if it were not installed"
    assert one_line_error("export.py", "--ckpt", str(ckpt64), "--out", str(tmp_path / "m.onnx"), block=block) == \
        f"error: export.py needs onnxscript: {INSTALL}"
    image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (120, 90, 80)).save(image)
    block = "sys.modules['onnxruntime'] = None"
    assert one_line_error("predict.py", str(image), "--ckpt", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o"),
                          block=block) == f"error: an .onnx model needs onnxruntime: {INSTALL}"

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(utils.UserError, match=r"garbage.onnx: not a readable ONNX model"):
        onnx_model.load_any(garbage)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(utils.UserError, match=r"foreign.onnx: an ONNX model without our metadata"):
        onnx_model.load_any(foreign)
    with pytest.raises(utils.UserError, match=r"--fast on: the compiled path is for .pt checkpoints"):
        predict.main(predict.get_args_parser().parse_args([str(image), "--ckpt", str(foreign), "--fast", "on",
                                                           "--out", str(tmp_path / "o")]))
