"""Joining: finished segment files joined into one output by stream copy (no re-encoding), with the source's audio
copied once, as the video writer copies it (`v2v.io.writer.StreamCopier`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from fractions import Fraction

import av

from v2v.errors import OutputError
from v2v.io.container import open_container
from v2v.io.writer import AudioSource, StreamCopier, discard_partial, temp_name, writing_errors

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Part:
    """A finished segment file to join: its frames count time from its first frame, which sits at `offset`
    (in the output's `time_base`). `expected` are the timestamps it must hold, each exactly once; when they
    can't be known ahead (a stage that makes frames), its timestamps must be unique and before `limit`."""

    path: str
    offset: int
    expected: list[int] | None
    label: str
    limit: int | None = None


def join_parts(parts: Sequence[Part], output: str, *, time_base: Fraction, audio: AudioSource | None,
               shift: float = 0.0) -> None:
    """Stream-copy the parts' video into `output` in order, with `audio`'s audio/subtitles muxed once.

    Every expected frame must be there exactly once (no gap, no duplicate at joins); timestamps go back to
    the source's clock, less `shift` seconds. Written to a temporary name and renamed only when complete.
    """
    partial = temp_name(output)
    container = copier = None
    try:
        with writing_errors(output):
            container = av.open(partial, "w")
            with open_container(parts[0].path) as first:
                template = first.streams.video[0]
                video = container.add_stream_from_template(template)
                if template.average_rate:  # else Matroska has no default duration and its blocks lose theirs
                    video.codec_context.framerate = template.average_rate
            if audio is not None:
                copier = StreamCopier(container, audio.path, origin=audio.origin, trim_start=audio.start)
            shift_ticks = round(shift / time_base) if shift > 0 else 0
            video.time_base = time_base
            for part in parts:
                with open_container(part.path) as opened:
                    stream = opened.streams.video[0]
                    seen = []
                    for packet in opened.demux(stream):
                        if not packet.size:
                            continue
                        stamp = round(packet.pts * packet.time_base / time_base) + part.offset
                        decode_stamp = round(packet.dts * packet.time_base / time_base) + part.offset
                        seen.append(stamp)
                        if copier is not None:
                            copier.copy_until(float(stamp * time_base))
                        duration = round(packet.duration * packet.time_base / time_base) if packet.duration else 0
                        packet.pts, packet.dts = stamp - shift_ticks, decode_stamp - shift_ticks
                        packet.time_base, packet.duration = time_base, duration  # all three in the output's base
                        packet.stream = video
                        container.mux(packet)
                stamps = sorted(seen)
                unique = len(set(stamps)) == len(stamps) and (not stamps or stamps[0] >= part.offset)
                within = part.limit is None or not stamps or stamps[-1] < part.limit
                if (stamps != part.expected) if part.expected is not None else not (unique and within and stamps):
                    raise OutputError(
                        f"{part.label} ({part.path}) does not hold its frames exactly once "
                        f"({len(seen)} found, {len(part.expected or ())} expected); remove the work folder and rerun"
                    )
            if copier is not None:
                copier.copy_until(math.inf if audio is None or audio.end is None else audio.end)
                copier.close()
            container.close()
    except BaseException:
        discard_partial(partial, copier, container)
        raise
    os.replace(partial, output)
