"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class BrushworkError(Exception):
    """Something the user can fix: bad input, a missing file, an impossible setting."""

    exit_code = 2


class ImageError(BrushworkError):
    """An image that cannot be read, written or used."""


class WeightsError(BrushworkError):
    """Weights that are missing, unreachable or corrupt."""

    exit_code = 1
