"""The portrait measures of ``brushwork eval --faces``: scikit-image's face detector on a real portrait."""

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from brushwork import evaluation, faces

from conftest import sample_photo


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return sample_photo("astronaut").resize((256, 256))  # one face, looking at the camera


def test_finds_the_astronauts_face(portrait):
    found = faces.find_faces(portrait)
    assert found, "the frontal-face cascade should find the astronaut's face"
    x, y, w, h = found[0]
    assert 100 < x + w / 2 < 160 and 40 < y + h / 2 < 110 and 40 < w < 120  # her face, not the flag or the suit


def test_measures_follow_what_happens_to_the_face(portrait):
    same = faces.face_measures(portrait, portrait)
    assert same == {"face_ssim": 1.0, "face_kept": 1.0}

    blurred = faces.face_measures(portrait.filter(ImageFilter.GaussianBlur(2)), portrait)
    assert 0.3 < blurred["face_ssim"] < 0.95

    box = faces.find_faces(portrait)[0]
    rows, cols = faces.features_region(box)
    erased = np.asarray(portrait).copy()
    erased[rows, cols] = 128  # eyes and mouth painted over with a flat grey
    gone = faces.face_measures(Image.fromarray(erased), portrait)
    assert gone["face_ssim"] < 0.2 and gone["face_kept"] == 0.0


def test_no_face_is_not_measured():
    cat = sample_photo("coffee").resize((256, 192))
    assert faces.face_measures(cat, cat) == {"face_ssim": pytest.approx(math.nan, nan_ok=True),
                                             "face_kept": pytest.approx(math.nan, nan_ok=True)}
    with pytest.raises(ValueError, match="one size"):
        faces.face_measures(sample_photo("astronaut").resize((128, 128)), sample_photo("astronaut").resize((256, 256)))


def test_iou():
    assert faces.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert faces.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert faces.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_evaluate_with_faces(tmp_path, weights_dir, portrait):
    (tmp_path / "content").mkdir()
    (tmp_path / "style").mkdir()
    portrait.save(tmp_path / "content" / "astronaut.png")
    sample_photo("coffee").resize((256, 192)).save(tmp_path / "content" / "coffee.png")
    sample_photo("hubble_deep_field").resize((128, 128)).save(tmp_path / "style" / "hubble.png")
    result = evaluation.evaluate(tmp_path / "content", tmp_path / "style", ["microast"], content_size=256,
                                 style_size=128, device="cpu", weights_dir=weights_dir, progress=False, faces=True)
    by_content = {record["content"]: record for record in result.records}
    assert 0 < by_content["astronaut.png"]["face_ssim"] < 1 and by_content["astronaut.png"]["face_kept"] in (0, 1)
    assert math.isnan(by_content["coffee.png"]["face_ssim"])
    (entry,) = evaluation.summarize(result.records)
    assert entry["face_ssim_mean"] == by_content["astronaut.png"]["face_ssim"]  # the photo without a face is skipped
    assert "face ssim ↑" in evaluation.summary_table([entry])
