"""`InterpolateStage`: new frames between the source's, at exact new instants (`v2v interpolate`).

Three ways to place them, each on the source's own clock so that a segment of a long run places them exactly
as a single pass would:

- `factor=N`: N-1 new frames evenly between each pair of neighbours; the time base is divided by N, so every
  new instant is a whole number of ticks and the source frames keep their instants. Variable frame rate stays
  variable (each gap is split evenly).
- `fps=F`: the output holds the instants k/F (k whole, counted from the clock's zero) from the first source
  frame to the last; a source frame on the grid is passed through, the others are made at their true position
  between their neighbours (RIFE 4.x takes any t in (0, 1)). The time base is 1/lcm(source denominator, F
  numerator): exact for 24 -> 60 and 23.976 -> 59.94 alike.
- `slowmo=N`: the frames of `factor=N` at the source's rate, so the clip lasts N times as long (instants are
  scaled by N from the clock's zero); audio can't follow and is dropped (`Timing.stretch`).

Across a scene cut (`v2v.scenes.is_cut`) nothing is blended: each new frame repeats the nearer source frame.
The stage keeps two frames, whatever the clip's length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction

import numpy as np

from v2v.errors import InputError, ParameterError, UsageError
from v2v.frames import Frame
from v2v.pipeline import Context, Timing
from v2v.scenes import is_cut

log = logging.getLogger(__name__)

# The most frames made per source frame (factor, slowmo, fps over the source's rate), as RIFE's own tools allow:
# past it the in-between frames are blends of blends, and a typo (--factor 1000) would run for hours.
MAX_FACTOR = 16

# (frame a, frame b, positions t in (0, 1)) -> one RGB uint8 (H, W, 3) image per position
Between = Callable[[np.ndarray, np.ndarray, Sequence[float]], list[np.ndarray]]


class InterpolateStage:
    """Makes frames between the source's. Give exactly one of `factor`, `fps` or `slowmo`.

    `model` is a registry name (default RIFE 4.0) loaded when the stage is made, or `between`, any function
    (a, b, positions) -> images, for other interpolators. `device`, `dtype`, `flow_scale` and `tta` go to the
    model (`v2v.restore.rife.Interpolator`).
    """

    context = Context(before=0, after=1)  # frames between a segment's last frame and the next one's are made here
    one_to_one = False

    def __init__(
        self,
        *,
        factor: int | None = None,
        fps: Fraction | float | str | None = None,
        slowmo: int | None = None,
        model: str = "rife-4.0",
        between: Between | None = None,
        device: str | None = None,
        dtype: str = "auto",
        flow_scale: float | str = "auto",
        tta: bool = False,
    ) -> None:
        given = [name for name, value in (("factor", factor), ("fps", fps), ("slowmo", slowmo)) if value is not None]
        if len(given) != 1:
            raise UsageError(f"give one of factor, fps or slowmo, not {' and '.join(given) or 'none'}")
        for name, value in (("factor", factor), ("slowmo", slowmo)):
            if value is not None and (int(value) != value or not 2 <= value <= MAX_FACTOR):
                raise ParameterError(name, f"must be a whole number from 2 to {MAX_FACTOR} (N-1 new frames between "
                                           f"each pair), got {value}")
        self.factor = int(factor or slowmo or 1)
        self.fps = Fraction(fps).limit_denominator(1_000_000) if fps is not None else None
        if self.fps is not None and self.fps <= 0:
            raise ParameterError("fps", f"must be > 0, got {fps}")
        self.slowmo = slowmo is not None
        if between is None:
            from v2v.restore.registry import lookup
            from v2v.restore.rife import Interpolator

            between = Interpolator(lookup(model, "interpolate").name, device=device, dtype=dtype,
                                   flow_scale=flow_scale, tta=tta).between
        self.between = between
        self.cuts: list[int] = []

    # -- declarations ------------------------------------------------------------------------------------
    def output_timing(self, timing: Timing) -> Timing:
        """The output's rate and time base (exact for every instant this stage makes)."""
        rate, time_base = timing.rate, timing.time_base
        if self.fps is not None:
            if rate is not None and self.fps <= rate:
                raise ParameterError(
                    "fps", f"{float(self.fps):g} is not above the source's {float(rate):g} frames/s; v2v interpolates, "
                    "it does not drop frames (use ffmpeg's fps filter to lower a rate)"
                )
            if rate is not None and self.fps > MAX_FACTOR * rate:
                raise ParameterError("fps", f"{float(self.fps):g} is more than {MAX_FACTOR} times the source's "
                                            f"{float(rate):g} frames/s; choose at most {float(MAX_FACTOR * rate):g}")
            base = None if time_base is None else Fraction(1, math.lcm(time_base.denominator, self.fps.numerator))
            return Timing(self.fps, base, timing.stretch)
        if self.slowmo:
            return Timing(rate, time_base, timing.stretch * self.factor)
        return Timing(None if rate is None else rate * self.factor,
                      None if time_base is None else time_base / self.factor, timing.stretch)

    def frames_out(self, count: int, rate: Fraction | None) -> int | None:
        """Frames given for `count` source frames: exact with a factor; with `fps`, the grid's instants over a
        constant `rate` (None when the rate is unknown)."""
        if self.fps is None:
            return (count - 1) * self.factor + 1 if count else 0
        if not rate or not count:
            return None
        return math.floor((count - 1) * self.fps / rate) + 1

    # -- the stage ---------------------------------------------------------------------------------------
    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        previous: Frame | None = None
        base: Fraction | None = None
        count = seen = 0
        for frame in frames:
            seen += 1
            if frame.pts is None or frame.time_base is None:
                raise InputError("interpolation needs frames with timestamps")
            if base is None:
                out = self.output_timing(Timing(None, frame.time_base))
                assert out.time_base is not None
                base = out.time_base
                count = frame.index * self.factor if self.fps is None else 0
            if previous is not None:
                for image, instant in self._made(previous, frame):
                    yield Frame(image, count, _ticks(instant, base), base, source_index=None)
                    count += 1
            if self._keeps(frame):
                yield Frame(frame.image, count, _ticks(self._place(_instant(frame)), base), base,
                            source_index=frame.source_index)
                count += 1
            previous = frame
        if previous is None:
            return
        if seen == 1 and previous.index == 0:
            raise InputError("interpolation needs at least two frames; the clip has one")
        if self.cuts:
            log.info("scene cuts at frames %s: repeated the nearer frame there, nothing blended",
                     ", ".join(map(str, self.cuts)))

    def _instants(self, start: Fraction, end: Fraction) -> list[tuple[Fraction, float]]:
        """(output instant, position in (0, 1)) of the new frames strictly between source instants start < end."""
        span = end - start
        if self.fps is None:
            return [(self._place(start + span * k / self.factor), k / self.factor) for k in range(1, self.factor)]
        first = math.floor(start * self.fps) + 1
        grid = (Fraction(k) / self.fps for k in range(first, math.ceil(end * self.fps)))
        return [(instant, float((instant - start) / span)) for instant in grid if start < instant < end]

    def _keeps(self, frame: Frame) -> bool:
        """Source frames are all kept, except with `fps`, where only those on the output grid are."""
        return self.fps is None or (_instant(frame) * self.fps).denominator == 1

    def _place(self, instant: Fraction) -> Fraction:
        return instant * self.factor if self.slowmo else instant

    def _made(self, a: Frame, b: Frame) -> list[tuple[np.ndarray, Fraction]]:
        start, end = _instant(a), _instant(b)
        if end <= start:
            raise InputError(f"frame {b.index} does not come after frame {a.index} in time; timestamps must increase")
        wanted = self._instants(start, end)
        if not wanted:
            return []
        positions = [position for _, position in wanted]
        if is_cut(a.image, b.image):
            self.cuts.append(b.index)
            images = [a.image if position < 0.5 else b.image for position in positions]
        else:
            images = self.between(a.image, b.image, positions)
        return [(image, instant) for image, (instant, _) in zip(images, wanted, strict=True)]


def _instant(frame: Frame) -> Fraction:
    assert frame.pts is not None and frame.time_base is not None
    return frame.pts * frame.time_base


def _ticks(instant: Fraction, time_base: Fraction) -> int:
    ticks = instant / time_base
    if ticks.denominator != 1:
        raise InputError(f"time base {time_base} can't express the instant {instant} s exactly")
    return int(ticks)
