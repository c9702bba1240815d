"""What an export produces: a file the board can run, with the facts a sweep reports about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from common.hashing import file_sha256


class ExportError(UserError, ValueError):
    """An export that cannot be done as asked (unknown format, missing converter, bad setting)."""


@dataclass(frozen=True)
class Artifact:
    """One exported file. `sha256` identifies the exact bytes (the latency cache key);
    `settings` records how it was made (quantization type, calibration, ...) for the sweep's log."""

    format: str  # registry name, e.g. "onnx-int8"
    path: Path
    runtime: str  # the registered device_actors runtime that loads it (its format's runtime)
    img_size: int
    size_mb: float  # 10^6 bytes, as file sizes are usually quoted
    sha256: str
    settings: dict = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def describe(path: Path, *, format: str, runtime: str, img_size: int, settings: dict) -> Artifact:
    """The Artifact for a finished file: size and content hash read from disk."""
    path = Path(path)
    return Artifact(format=format, path=path, runtime=runtime, img_size=img_size,
                    size_mb=path.stat().st_size / 1e6, sha256=file_sha256(path), settings=dict(settings))
