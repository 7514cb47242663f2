from typing import Any

class QuietMarkers:
    """A changes-mode lone marker stored and journaled in one call (the writer thread)."""

    taken: int

    def __init__(self, cols: list[int], template: tuple[bytes, bytes], ncols: int, row_size: int) -> None: ...
    def write(self, w: Any, b: Any) -> bool:
        """``w._write(b)`` then ``w._make_durable()`` for a lone marker like the journal's
        last frame: True; False (nothing done) for any other case."""
