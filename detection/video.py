"""Video in and out for `detect`, through OpenCV (`opencv-python-headless`, driver side only: a board
never decodes video, it receives frames). Frames are (H, W, 3) uint8 RGB like every image here."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
OUTPUT_SUFFIX = ".mp4"  # written as MPEG-4 part 2 ("mp4v"), which every OpenCV build can encode


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError("video sources need OpenCV: pip install opencv-python-headless "
                        "(part of pip install '.[train]')") from None
    return cv2


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # as the container declares it; 0 when it does not say
    width: int
    height: int


class VideoReader:
    """A video's properties (`info`) and its frames (RGB), decoded one at a time as they are iterated."""

    def __init__(self, path: Path):
        cv2 = _cv2()
        if not path.is_file():
            raise FileNotFoundError(f"video not found: {path}")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise UserError(f"{path}: OpenCV {cv2.__version__} cannot decode this file as a video")
        get = self._capture.get
        self.info = VideoInfo(fps=get(cv2.CAP_PROP_FPS) or 25.0, frames=int(get(cv2.CAP_PROP_FRAME_COUNT)),
                              width=int(get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(frame[:, :, ::-1])

    def close(self) -> None:
        self._capture.release()


class VideoWriter:
    """Annotated frames to an .mp4 file at the source's frame rate and size."""

    def __init__(self, path: Path, info: VideoInfo):
        cv2 = _cv2()
        self.path = path.with_suffix(OUTPUT_SUFFIX)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), info.fps,
                                       (info.width, info.height))
        if not self._writer.isOpened():
            raise UserError(f"{self.path}: OpenCV cannot write an mp4v video here")

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(np.ascontiguousarray(frame[:, :, ::-1]))

    def close(self) -> None:
        self._writer.release()
