import json
import subprocess
import sys
from pathlib import Path

import pytest

from brushwork import benchmark
from brushwork.errors import BrushworkError


def test_parse_size():
    assert benchmark.parse_size("512") == (512, 512)
    assert benchmark.parse_size("3840x2160") == (3840, 2160)
    for bad in ("", "big", "4x4", "1x2x3"):
        with pytest.raises(BrushworkError, match="WIDTHxHEIGHT"):
            benchmark.parse_size(bad)


def test_each_case_next_to_its_baseline(weights_dir):
    results = benchmark.run_benchmark(["microast"], ["64", "96x80"], ["cpu"], runs=2, warmup=0, rounds=2,
                                      weights_dir=weights_dir, progress=False)
    assert [(r["variant"], r["width"], r["height"]) for r in results] == [
        ("brushwork", 64, 64), ("baseline", 64, 64), ("brushwork", 96, 80), ("baseline", 96, 80)]
    for result in results:
        assert len(result["times_s"]) == 4 and result["rounds"] == 2 and result["min_s"] <= result["median_s"] <= result["max_s"]
        assert result["peak_rss_mb"] >= result["idle_rss_mb"] > 50
        assert result["peak_gpu_mb"] is None
        # brushwork's process settings (huge pages, freed memory kept) are its own: the baseline runs as the
        # reference code does
        assert result["huge_pages"] is (result["variant"] == "brushwork")
        assert result["keeps_freed_memory"] is (result["variant"] == "brushwork")
    table = benchmark.markdown_table(results)
    assert table.count("| microast | cpu |") == 2 and "96x80" in table


def test_tiled_case_and_onnx_runtime_variant(weights_dir):
    results = benchmark.run_benchmark(["microast"], ["600x400"], ["cpu"], runs=1, warmup=0, rounds=1,
                                      weights_dir=weights_dir, progress=False, max_memory="64M", onnx=True)
    by_variant = {r["variant"]: r for r in results}
    assert set(by_variant) == {"brushwork", "baseline", "onnx"}
    assert all(r["model"] == "microast" for r in results)
    assert by_variant["brushwork"]["tile"] is not None and by_variant["baseline"]["tile"] is None
    table = benchmark.markdown_table(results)
    assert "onnx speed-up" in table and f"| {by_variant['brushwork']['tile']} px |" in table


def test_markdown_table_ratio():
    base = dict(model="m", device="cpu", width=8, height=8, min_s=1, max_s=1, peak_rss_mb=100, peak_gpu_mb=None)
    results = [dict(base, variant="brushwork", median_s=0.5), dict(base, variant="baseline", median_s=1.0)]
    assert "| 2.00x |" in benchmark.markdown_table(results)


def test_bench_command(tmp_path, weights_dir):
    run = subprocess.run([sys.executable, "-m", "brushwork", "bench", "--sizes", "48", "--runs", "1", "--rounds", "1",
                          "--json", tmp_path / "b.json", "--weights-dir", weights_dir],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert "cores" in data["machine"] and len(data["results"]) == 2
    run = subprocess.run([sys.executable, "-m", "brushwork", "bench", "--sizes", "huge"], capture_output=True,
                         text=True)
    assert run.returncode == 2 and "WIDTHxHEIGHT" in run.stderr and "Traceback" not in run.stderr


def test_training_step_next_to_the_reference_step(weights_dir):
    results = benchmark.run_training_benchmark(batch_size=2, crop=32, runs=1, warmup=0, rounds=1,
                                               weights_dir=weights_dir, progress=False)
    assert [r["variant"] for r in results] == ["brushwork", "fp32", "baseline"]
    assert all(r["median_s"] > 0 and r["batch_size"] == 2 and r["crop"] == 32 for r in results)
    assert results[1]["precision"] == "32-true"
    table = benchmark.training_table(results)
    assert f"| microast | brushwork | {results[0]['precision']} | cpu | 2 x 32 px |" in table
    assert "| microast | fp32 | 32-true | cpu | 2 x 32 px |" in table


@pytest.mark.parametrize("method", ["adain", "johnson", "vst"])
def test_every_methods_training_step_is_measured(method, weights_dir):
    results = benchmark.run_training_benchmark(method=method, batch_size=2, crop=32, runs=1, warmup=0, rounds=1,
                                               weights_dir=weights_dir, progress=False)
    assert [(r["method"], r["variant"]) for r in results] == [(method, "brushwork"), (method, "fp32")]
    assert all(r["median_s"] > 0 for r in results)
    with pytest.raises(BrushworkError, match="unknown training method"):
        benchmark.run_training_benchmark(method="cyclegan", weights_dir=weights_dir, progress=False)


def test_every_method_next_to_its_baseline(weights_dir):
    results = benchmark.run_benchmark(["gatys", "adain-vgg16-hed"], ["40"], ["cpu"], runs=1, warmup=0, rounds=1,
                                      weights_dir=weights_dir, progress=False, gatys_steps=3)
    assert [(r["model"], r["variant"]) for r in results] == [
        ("gatys", "brushwork"), ("gatys", "baseline"), ("adain-vgg16-hed", "brushwork"),
        ("adain-vgg16-hed", "baseline")]
    assert all(r["median_s"] > 0 for r in results)
    assert dict(results[0]["options"]) == {"progress": False, "steps": 3}


def test_gatys_convergence_compares_coarse_to_fine_with_single_scale(weights_dir):
    summary = benchmark.run_gatys_convergence("64", steps=6, loss_net="vgg16-hed", min_side=32,
                                              weights_dir=weights_dir, progress=False)
    multi, single = summary["multiscale"], summary["single-scale"]
    assert multi["sizes"] == [[32, 32], [64, 64]] or multi["sizes"] == [(32, 32), (64, 64)]
    assert single["evaluations"] == 6 and multi["evaluations"] == 6 + 20
    for result in (multi, single):
        assert 0 < result["seconds_to_target"] <= result["total_seconds"]
        assert result["final_loss"] <= summary["target_loss"]
    assert summary["speedup"] == pytest.approx(single["seconds_to_target"] / multi["seconds_to_target"])
    assert "Coarse-to-fine reaches the loss" in benchmark.convergence_table(summary)


def test_gpu_check_script_runs_dry_on_the_cpu(weights_dir, tmp_path):
    """scripts/gpu_check.py, meant for a GPU machine, on the CPU at small sizes: its precision figures are the fast
    path's (within 45 dB of fp32) and every timed case has numbers, not an error."""
    script = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--weights-dir", str(weights_dir),
                           "--sizes", "96,120x80", "--precision-size", "128", "--tiled-size", "260", "--tile", "96",
                           "--runs", "1", "--warmup", "0", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(report["precision"]) == 2
    for row in report["precision"]:
        assert all(value >= 45 for key, value in row.items() if key != "index")
    assert [(row["size"], row["variant"]) for row in report["speed"]] == [
        ("96x96", "baseline (plain fp32)"), ("96x96", "fast, whole"),
        ("120x80", "baseline (plain fp32)"), ("120x80", "fast, whole")]
    assert all(row["min_s"] <= row["median_s"] <= row["max_s"] for row in report["speed"])
    assert "| 120x80 | fast, whole |" in (tmp_path / "gpu_check.md").read_text()


def test_the_video_benchmark_times_whole_runs_against_painting_alone(weights_dir):
    results = benchmark.run_video_benchmark(["96x64"], variants=["none", "flow+measure"], frames=3, rounds=1,
                                            warmup=1, weights_dir=weights_dir, progress=False)
    assert [(r["variant"], r["width"], r["height"], r["frames"]) for r in results] == [
        ("none", 96, 64, 3), ("flow+measure", 96, 64, 3)]
    for result in results:
        assert len(result["times_s"]) == 1 and result["fps"] == pytest.approx(3 / result["median_s"])
        assert len(result["load_averages"]) == 1
    table = benchmark.video_table(results)
    assert "| 96x64 | none | 3 |" in table and "| 1.00x |" in table
    with pytest.raises(BrushworkError, match="unknown video variant"):
        benchmark.run_video_benchmark(["96x64"], variants=["flow+fast"])
