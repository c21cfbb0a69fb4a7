"""The process's peak resident memory, for the export's and the timing's reports (no torch import)."""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (None where the platform has no getrusage: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
