"""Sample images that need no files of the user's: photos shipped with scikit-image, named ``sample:NAME``."""

from __future__ import annotations

from PIL import Image

from .errors import ImageError

PREFIX = "sample:"

#: Sample name -> (scikit-image loader, what it shows).
SAMPLES = {
    "astronaut": ("astronaut", "portrait of astronaut Eileen Collins (photo)"),
    "chelsea": ("chelsea", "Chelsea the cat (photo)"),
    "coffee": ("coffee", "a cup of coffee (photo)"),
    "rocket": ("rocket", "a rocket launch (photo)"),
    "hubble": ("hubble_deep_field", "Hubble deep field (for use as a style)"),
    "ihc": ("immunohistochemistry", "stained tissue under a microscope (for use as a style)"),
}


def is_sample(reference: object) -> bool:
    return isinstance(reference, str) and reference.startswith(PREFIX)


def load_sample(reference: str) -> Image.Image:
    """The RGB image for ``sample:NAME``."""
    name = reference[len(PREFIX):]
    if name not in SAMPLES:
        raise ImageError(f"unknown sample {name!r}; samples: {', '.join(PREFIX + n for n in SAMPLES)}")
    import skimage.data  # imported here: it takes a moment and only samples need it

    return Image.fromarray(getattr(skimage.data, SAMPLES[name][0])()).convert("RGB")
