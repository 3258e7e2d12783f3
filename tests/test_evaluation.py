import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from brushwork import evaluation
from brushwork.errors import BrushworkError

from conftest import sample_photo


@pytest.fixture(scope="module")
def folders(tmp_path_factory, reference_pair):
    content, *styles = reference_pair
    root = tmp_path_factory.mktemp("eval")
    (root / "content").mkdir()
    (root / "style").mkdir()
    Image.open(content).resize((80, 64)).save(root / "content" / "sailboat.png")
    for name in ("chelsea", "coffee"):
        sample_photo(name).resize((80, 64)).save(root / "content" / f"{name}.png")
    for style in styles:
        Image.open(style).resize((64, 64)).save(root / "style" / f"{style.stem}.png")
    return root


def test_evaluate_and_report(folders, weights_dir, tmp_path):
    models = ["microast", "microast-cv-coco-wikiart"]
    result = evaluation.evaluate(folders / "content", folders / "style", models, content_size=64, style_size=64,
                                 max_styles=2, sample_pairs=3, save_dir=tmp_path / "images", device="cpu",
                                 weights_dir=weights_dir, progress=False)
    assert len(result.records) == 3 * 2 * 2
    for record in result.records:
        assert record["loss_net"] == "vgg16-hed" and (record["width"], record["height"]) == (80, 64)
        assert 0 < record["ssim"] < 1 and record["style_loss"] > 0 and record["content_loss"] > 0
        assert 0 < record["perceptual_distance"] < 4 and 0 < record["color_distance"] < 1
    assert len(result.samples) == 3 and all(set(models) < set(s) for s in result.samples.values())
    assert len(list((tmp_path / "images" / "microast").glob("*.jpg"))) == 6

    paths = evaluation.write_report(result, tmp_path / "report")
    with open(paths["metrics.csv"]) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12 and {row["model"] for row in rows} == set(models)
    summary = json.loads(paths["summary.json"].read_text())["summary"]
    assert [entry["model"] for entry in summary] == models and summary[0]["pairs"] == 6
    table = paths["summary.md"].read_text()
    assert "vgg16-hed" in table and table.count("±") == 2 * len(evaluation.METRICS)
    with Image.open(paths["ssim_vs_style_loss.png"]) as plot:
        assert plot.width > 500
    with Image.open(paths["contact_sheet.png"]) as sheet:
        assert sheet.height > 3 * 160 and sheet.width > 4 * 160


def test_summary_known_values():
    records = [{"model": "m", "loss_net": "x", **{k: v for k in evaluation.METRICS}} for v in (1.0, 3.0)]
    (entry,) = evaluation.summarize(records)
    assert entry["pairs"] == 2 and entry["ssim_mean"] == 2.0 and entry["ssim_std"] == pytest.approx(2 ** 0.5)
    assert "| m | 2 | 2 ± 1.41 |" in evaluation.summary_table([entry])


def test_bad_folders(tmp_path, weights_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrushworkError, match="no content images"):
        evaluation.evaluate(tmp_path / "empty", tmp_path, ["microast"], weights_dir=weights_dir)
    with pytest.raises(BrushworkError, match="not a folder"):
        evaluation.evaluate(tmp_path / "missing", tmp_path, ["microast"], weights_dir=weights_dir)


def test_eval_command(folders, weights_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "brushwork", "eval", folders / "content", folders / "style",
                          "-o", tmp_path / "out", "--max-contents", "1", "--max-styles", "1", "--content-size", "32",
                          "--style-size", "32", "--weights-dir", weights_dir], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "| microast-cv-coco-wikiart | 1 |" in run.stdout and "evaluating" in run.stderr  # the default model
    assert (tmp_path / "out" / "contact_sheet.png").is_file()


def test_eval_command_takes_a_trained_folder(folders, weights_dir, tmp_path):
    """A folder written by 'brushwork train' is evaluated like a registry model, its outputs saved under a folder
    named after it; an unknown name is a one-line error before any painting."""
    import brushwork

    mine = tmp_path / "runs" / "mine" / "weights"
    shutil.copytree(Path(brushwork.__file__).parent / "models" / "microast", mine)
    common = ["--max-contents", "1", "--max-styles", "1", "--content-size", "32", "--style-size", "32",
              "--weights-dir", weights_dir]
    run = subprocess.run([sys.executable, "-m", "brushwork", "eval", folders / "content", folders / "style",
                          "-o", tmp_path / "out", "--model", mine, "--model", "microast", "--save-images", *common],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = {line.split("|")[1].strip(): line for line in run.stdout.splitlines() if line.startswith("| ")}
    assert str(mine) in rows and "microast" in rows
    # The same weights give the same numbers under either name.
    assert rows[str(mine)].split("|")[3:8] == rows["microast"].split("|")[3:8]
    assert len(list((tmp_path / "out" / "images" / "mine-weights").glob("*.jpg"))) == 1

    run = subprocess.run([sys.executable, "-m", "brushwork", "eval", folders / "content", folders / "style",
                          "-o", tmp_path / "bad", "--model", "no-such-model", *common], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown weights 'no-such-model'" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "bad" / "metrics.csv").exists()


def test_every_method_is_evaluated_side_by_side(folders, weights_dir, tmp_path):
    models = ["microast", "adain-vgg16-hed", "gatys"]
    result = evaluation.evaluate(folders / "content", folders / "style", models, content_size=48, style_size=48,
                                 max_contents=1, max_styles=1, device="cpu", weights_dir=weights_dir,
                                 progress=False, gatys_options={"steps": 10})
    assert [record["model"] for record in result.records] == models
    assert result.settings["gatys"] == {"steps": 10}
    for record in result.records:
        assert 0 < record["ssim"] < 1 and record["style_loss"] > 0


def test_heldout_sets_script_builds_every_set_or_nothing(tmp_path):
    """scripts/heldout_sets.py copies each set's 10 photos and 5 paintings, and writes nothing when one is missing."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    try:
        import heldout_sets
    finally:
        sys.path.pop(0)
    source = tmp_path / "eval"
    for role in ("content", "style"):
        (source / role).mkdir(parents=True)
    names = [(role, name) for photos, paintings in heldout_sets.SETS.values()
             for role, group in (("content", photos), ("style", paintings)) for name in group]
    assert len(set(names)) == 15 * len(heldout_sets.SETS) == 45  # the sets share no image
    for k, (role, name) in enumerate(names[:-1]):
        Image.new("RGB", (32, 24), (8 * k, 0, 0)).save(source / role / name)
    script = [sys.executable, "scripts/heldout_sets.py", str(source), "-o"]
    root = Path(__file__).parents[1]
    missing = subprocess.run([*script, str(tmp_path / "bad")], capture_output=True, text=True, cwd=root)
    assert missing.returncode == 1 and not (tmp_path / "bad").exists()
    assert missing.stderr.count("\n") == 1 and names[-1][1] in missing.stderr
    Image.new("RGB", (32, 24), "white").save(source / names[-1][0] / names[-1][1])
    done = subprocess.run([*script, str(tmp_path / "sets")], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    for key, (photos, paintings) in heldout_sets.SETS.items():
        assert sorted(p.name for p in (tmp_path / "sets" / key / "content").iterdir()) == sorted(photos)
        assert sorted(p.name for p in (tmp_path / "sets" / key / "style").iterdir()) == sorted(paintings)
    first = names[0]
    assert (tmp_path / "sets" / "a" / first[0] / first[1]).read_bytes() == (source / first[0] / first[1]).read_bytes()
