"""Running segments as Ray tasks (`run_ray`): the stage factory goes into the object store once, each worker
process builds its stages once, and each finished segment's file is saved by the driver as it arrives."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from v2v.errors import V2VError, require
from v2v.io.writer import Encoding, temp_name
from v2v.pipeline import Stage
from v2v.segments.local import StageFactory, encode_segment
from v2v.segments.manifest import WorkFolder
from v2v.segments.plan import Plan, Segment

# A Ray worker's stages, by the object id of the factory they came from: models load once per worker process,
# not once per segment.
_WORKER_STAGES: dict[str, Sequence[Stage]] = {}


def _segment_bytes(plan: Plan, segment: Segment, factory: list[Any], encoding: Encoding, suffix: str) -> bytes:
    """Ray task body: encode one segment in the worker's temp folder and hand back the file's bytes, so that
    workers need no storage shared with the driver. `factory` is `[ObjectRef]` of the stage factory (in a list,
    so Ray leaves it a reference): it is fetched and called once per worker process."""
    import tempfile

    import ray

    key = factory[0].hex()
    if key not in _WORKER_STAGES:
        _WORKER_STAGES.clear()  # one run's stages at a time
        _WORKER_STAGES[key] = ray.get(factory[0])()
    stages = _WORKER_STAGES[key]
    with tempfile.TemporaryDirectory(prefix="v2v-segment-") as folder:
        path = os.path.join(folder, f"segment{suffix}")
        encode_segment(plan, segment, lambda: stages, encoding, path)
        return Path(path).read_bytes()


def run_ray(
    plan: Plan,
    pending: list[Segment],
    make_stages: StageFactory,
    encoding: Encoding,
    done: Callable[[Segment], None],
    work: WorkFolder,
    *,
    workers: int,
    address: str | None,
    retries: int,
) -> None:
    """Segments as Ray tasks, at most `workers` in flight; each result is saved as soon as it arrives."""
    ray = require("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else workers,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(_segment_bytes).options(num_cpus=1, num_gpus=gpus, max_retries=retries)
        factory = [ray.put(make_stages)]
        queue = list(pending)
        in_flight: dict[Any, Segment] = {}
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                segment = queue.pop(0)
                in_flight[task.remote(plan, segment, factory, encoding, work.suffix)] = segment
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in finished:
                segment = in_flight.pop(ref)
                try:
                    data = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                    raise V2VError.naming(
                        "segment {number}: its worker died {times} times ({why}); giving up (finished segments are "
                        "kept: fix the cause and rerun with {resume})",
                        number=segment.number, times=retries + 1, why=type(exc).__name__,
                    ) from exc
                path = work.segment_path(segment.number)
                partial = Path(temp_name(str(path)))
                partial.write_bytes(data)
                os.replace(partial, path)
                done(segment)
    finally:
        if started_here:
            ray.shutdown()
