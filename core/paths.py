"""Where cached downloads and converted models live."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of every cache: $DISTILL_CACHE, else ~/.cache/distill."""
    root = Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill")
    root.mkdir(parents=True, exist_ok=True)
    return root
