"""brushwork: neural style transfer that paints a photo in the style of a painting.

>>> import brushwork
>>> image = brushwork.stylize("photo.jpg", "painting.jpg", alpha=0.8)
>>> image.save("painted.png")
"""

__version__ = "0.1.0"

import os as _os

# Large CPU tensors on transparent huge pages (PyTorch's CPU allocator, read at its first large allocation):
# measured ten times fewer page faults when painting a 4K image, and faster (docs/BENCHMARKS.md). Set the
# variable to 0 to opt out.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .api import Stylizer, load_model, stylize  # noqa: E402
from .errors import BrushworkError, ImageError, WeightsError  # noqa: E402
from .video import VideoReport, stylize_video  # noqa: E402

__all__ = ["stylize", "load_model", "Stylizer", "stylize_video", "VideoReport", "BrushworkError", "ImageError",
           "WeightsError", "__version__"]
