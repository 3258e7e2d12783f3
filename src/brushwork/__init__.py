"""brushwork: neural style transfer that paints a photo in the style of a painting.

>>> import brushwork
>>> image = brushwork.stylize("photo.jpg", "painting.jpg", alpha=0.8)
>>> image.save("painted.png")
"""

__version__ = "0.1.0"

from . import process as _process

# Huge pages for large CPU tensors and freed memory kept for reuse: a fifth faster at 4K (see brushwork.process,
# which says how to opt out).
_process.configure()

from .api import Stylizer, load_model, stylize  # noqa: E402
from .errors import BrushworkError, ImageError, WeightsError  # noqa: E402
from .video import VideoReport, stylize_video  # noqa: E402

__all__ = ["stylize", "load_model", "Stylizer", "stylize_video", "VideoReport", "BrushworkError", "ImageError",
           "WeightsError", "__version__"]
