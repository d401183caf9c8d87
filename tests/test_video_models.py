"""Video diffusion models (`v2v.diffusion.video_stage.VideoModelStage`, the `wan` family) with a tiny random Wan built
from config (`tests/tiny_video.py`): equal to diffusers' own pipeline on one window, the streamed VAE equal to the
whole-clip VAE, noise by absolute frame, exact resume, the command's timing and audio; seams and colour drift
measured with stub denoisers (a tiny random model barely links frames, so its seams mean little)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_video  # noqa: E402
from conftest import write_clip  # noqa: E402
from tiny_diffusion import one_thread  # noqa: E402, F401 (an autouse fixture)

from v2v.diffusion.config import RestyleConfig  # noqa: E402
from v2v.diffusion.video_stage import VideoModelStage, WindowChain  # noqa: E402
from v2v.frames import Frame, images_to_tensor, tensor_to_images  # noqa: E402

wan_folder = tiny_video.tiny_wan  # the tiny Wan pipeline folder, a session fixture

STEPS, STRENGTH, GUIDANCE = 3, 0.8, 5.0


@pytest.fixture(scope="module")
def stage(wan_folder: Path) -> VideoModelStage:
    config = RestyleConfig(model=str(wan_folder), prompt="a cat", steps=STEPS, strength=STRENGTH, guidance=GUIDANCE,
                           window=9, window_overlap=4)  # fmt: skip
    return VideoModelStage(config)


def rewindowed(stage: VideoModelStage, window: int, overlap: int) -> VideoModelStage:
    """The same loaded stage with other windows."""
    stage.window, stage.overlap = window, overlap
    stage.chain = WindowChain((window - 1) // 4 + 1, overlap // 4, stage._denoise, anchor=stage.config.anchor)
    return stage


def noisy_frames(count: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Smooth random pictures that move a little from frame to frame (no scene cut between them)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (height // 8, width // 8, 3)).astype(np.float32)
    import cv2

    out = []
    for index in range(count):
        picture = cv2.resize(np.roll(base, index % 3, axis=1), (width, height), interpolation=cv2.INTER_LINEAR)
        out.append(np.clip(picture + index, 0, 255).astype(np.uint8))
    return out


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(image, index, source_index=index, pts=index) for index, image in enumerate(images)]


# --- exact invariants -------------------------------------------------------------------------------------


def test_one_window_is_the_wan_pipeline_pixel_for_pixel(stage: VideoModelStage,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A clip that fits one window (9 frames: 3 latent frames) equals `WanVideoToVideoPipeline` called directly with
    the same frames, prompt, settings and noise."""
    import diffusers.pipelines.wan.pipeline_wan_video2video as wan

    rewindowed(stage, 9, 4)
    images = noisy_frames(9)
    ours = [frame.image for frame in stage.process(iter(as_frames(images)))]
    monkeypatch.setattr(wan, "randn_tensor", lambda shape, generator=None, device=None, dtype=None, layout=None:
                        stage.noise(0, 0, shape).to(device, dtype))  # fmt: skip
    theirs = stage.pipe(video=list(images_to_tensor(images)), prompt="a cat", height=48, width=64,
                        num_inference_steps=STEPS, strength=STRENGTH, guidance_scale=GUIDANCE, output_type="pt",
                        max_sequence_length=16).frames[0]  # fmt: skip
    theirs = tensor_to_images(theirs)
    assert len(ours) == 9
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not np.array_equal(ours[0], images[0])  # it did restyle


@pytest.mark.parametrize("tiling", [False, True])
def test_streamed_vae_equals_whole_clip(stage: VideoModelStage, tiling: bool) -> None:
    """Chunk by chunk with the cache carried (one per tile with tiling on) equals diffusers' whole-clip encode and
    decode, bit for bit."""
    from diffusers import AutoencoderKLWan

    from v2v.diffusion.video_vae import StreamingWanVAE

    vae = AutoencoderKLWan.from_config(stage.pipe.vae.config)
    vae.load_state_dict(stage.pipe.vae.state_dict())
    if tiling:  # tiles of 32 every 16 pixels over 48x64 frames: 3 x 4 tiles
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                          tile_sample_stride_width=16)  # fmt: skip
    video = torch.rand(1, 3, 9, 48, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    streamed = StreamingWanVAE(vae)
    with torch.inference_mode():
        whole = vae.encode(video).latent_dist.mode()
        chunks = [streamed.encode(video[:, :, :1])] + [streamed.encode(video[:, :, i : i + 4]) for i in (1, 5)]
        assert torch.equal(torch.cat(chunks, 2), whole)
        decoded = vae.decode(whole).sample
        parts = [streamed.decode(whole[:, :, :2]), streamed.decode(whole[:, :, 2:])]
        assert torch.equal(torch.cat(parts, 2), decoded)
    assert decoded.shape[2] == 9


@pytest.mark.parametrize("window, overlap", [(9, 4), (13, 8), (17, 0)])
def test_noise_of_a_frame_is_the_same_whatever_the_windows(stage: VideoModelStage, window: int, overlap: int) -> None:
    """Each absolute latent frame is denoised from the noise of its own seed, whatever --window/--window-overlap."""
    seen: dict[int, torch.Tensor] = {}

    def recording(clean: torch.Tensor, start: int, hold: object) -> torch.Tensor:
        noise = stage.noise(stage._shot_first, start, clean.shape)
        for offset in range(clean.shape[2]):
            seen.setdefault(start + offset, noise[:, :, offset])
        return clean

    rewindowed(stage, window, overlap).chain.denoise = recording
    list(stage.process(iter(as_frames(noisy_frames(25)))))
    reference = stage.noise(0, 0, (1, 16, 7, 6, 8))
    assert sorted(seen) == list(range(7))
    assert all(torch.equal(seen[j], reference[:, :, j]) for j in seen)
    assert not torch.equal(reference[:, :, 0], reference[:, :, 1])


def test_windows_never_straddle_a_cut_and_a_shot_starts_afresh(stage: VideoModelStage) -> None:
    """Two shots (a cut at frame 11): every window lies in one shot, the second shot's first window holds nothing
    of the first shot, and every frame comes out once, in order."""
    calls: list[tuple[int, int, int, bool]] = []

    def recording(clean: torch.Tensor, start: int, hold: object) -> torch.Tensor:
        calls.append((stage._shot_first, start, clean.shape[2], hold is not None))
        return clean

    rewindowed(stage, 9, 4).chain.denoise = recording
    images = noisy_frames(11, seed=0) + [image // 4 for image in noisy_frames(14, seed=5)]  # another, darker shot
    out = list(stage.process(iter(as_frames(images))))
    assert [frame.index for frame in out] == list(range(25))
    firsts = [first for first, *_ in calls]
    assert set(firsts) == {0, 11}
    second = [call for call in calls if call[0] == 11]
    assert second[0][1] == 0 and not second[0][3]  # latent frame 0 of the new shot, nothing held
    for first, start, count, _ in calls:  # the last frame a window covers, the shot's padding to 4k+1 frames included
        last = first + 4 * (start + count - 1)
        assert last < (13 if first == 0 else 11 + 17)  # 11 frames padded to 13 (frame 10 repeated); 14 to 17


# --- the command ------------------------------------------------------------------------------------------


def wan_command(wan_folder: Path, source: Path, output: Path, *more: str) -> list[str]:
    return ["restyle", str(source), "-o", str(output), "--model", str(wan_folder), "--prompt", "a cat", "--steps",
            str(STEPS), "--strength", str(STRENGTH), "--window", "9", "--window-overlap", "4", "--no-progress",
            *more]  # fmt: skip


def test_command_keeps_frames_timestamps_and_audio_of_transcode(wan_folder: Path, tmp_path: Path) -> None:
    """At 72x40 (not multiples of 16: padded inside, cut back), 14 frames (not 4k+1): the frames, their timestamps
    and the audio equal a plain `v2v transcode`'s."""
    import av

    from v2v.cli import main
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=14, width=72, height=40, audio=True)
    restyled, plain = tmp_path / "out.mp4", tmp_path / "plain.mp4"
    assert main(wan_command(wan_folder, source, restyled)) == 0
    assert main(["transcode", str(source), "-o", str(plain), "--no-progress"]) == 0
    with open_source(restyled) as a, open_source(plain) as b:
        ours, theirs = list(a), list(b)
    assert [(f.pts, f.time_base, f.image.shape) for f in ours] == [(f.pts, f.time_base, f.image.shape) for f in theirs]
    assert len(ours) == 14 and ours[0].image.shape == (40, 72, 3)

    def audio(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]

    assert audio(restyled) == audio(plain) and audio(plain)
    assert not (tmp_path / ".out.mp4.v2v-windows").exists()  # the window states go with a finished run


def test_killed_after_a_window_resumes_to_the_same_bytes(wan_folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An image-sequence output stopped after its 3rd window, then run again with --resume, equals an uninterrupted
    run byte for byte (the stage continues from its saved window state: tail latents, VAE caches, anchor)."""
    from v2v.cli import main

    source = write_clip(tmp_path / "in.mp4", frames=30)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(wan_command(wan_folder, source, whole / "%03d.png")) == 0
    original = WindowChain._window
    done = {"windows": 0}

    def stop_after_three(self: WindowChain, last: bool) -> list[object]:
        if done["windows"] == 3:
            raise KeyboardInterrupt
        done["windows"] += 1
        return original(self, last)

    monkeypatch.setattr(WindowChain, "_window", stop_after_three)
    assert main(wan_command(wan_folder, source, resumed / "%03d.png")) == 130
    monkeypatch.setattr(WindowChain, "_window", original)
    assert sorted((resumed / ".%03d.png.v2v-windows").glob("window-*.pt")), "window states were saved before the stop"
    assert main(wan_command(wan_folder, source, resumed / "%03d.png", "--resume")) == 0
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir() if not p.name.startswith(".")) and len(names) == 30
    assert all((whole / n).read_bytes() == (resumed / n).read_bytes() for n in names)


def test_segmented_run_continues_each_shot_from_window_states(wan_folder: Path, tmp_path: Path) -> None:
    """A segmented run (--resume on a fresh run: segments of 2 s cut at keyframes) gives the single pass's frames
    exactly: its second segment continues from a window state the first one saved; not segmented by default, and
    Ray, whose segments would run side by side, is refused in one line."""
    from v2v.cli import main
    from v2v.io.reader import open_source

    source = write_clip(tmp_path / "in.mp4", frames=30, options={"g": "10"})
    lossless = ["--codec", "ffv1"]
    assert main(wan_command(wan_folder, source, tmp_path / "one.mkv", *lossless, "--segment-seconds", "2")) == 0
    assert not list(tmp_path.glob(".one.mkv.v2v-work"))  # one pass by default: segments would redo windows
    segmented = wan_command(wan_folder, source, tmp_path / "seg.mkv", *lossless, "--segment-seconds", "2", "--resume")
    assert main(segmented) == 0
    with open_source(tmp_path / "one.mkv") as a, open_source(tmp_path / "seg.mkv") as b:
        one, seg = [f.image for f in a], [f.image for f in b]
    assert len(one) == len(seg) == 30 and all(np.array_equal(x, y) for x, y in zip(one, seg, strict=True))
    assert main(wan_command(wan_folder, source, tmp_path / "ray.mkv", "--backend", "ray")) == 2


# --- seams and drift, with stub denoisers -----------------------------------------------------------------


def chain_over(stub: object, windows: int, size: int = 5, overlap: int = 2, **options: object) -> torch.Tensor:
    """The final latents a `WindowChain` gives for a flat shot (1 channel, 2x2) of exactly `windows` windows."""
    chain = WindowChain(size, overlap, stub, **options)  # type: ignore[arg-type]
    count = size + (windows - 1) * (size - overlap)
    finals = []
    for _ in range(count):
        finals += chain.push(torch.zeros(1, 1, 1, 2, 2))
    finals += chain.finish()
    assert len(finals) == count
    return torch.cat(finals, 2)[0, 0].mean((1, 2))


@pytest.mark.parametrize("overlap", [1, 2, 3])
def test_cross_fade_cuts_a_constant_jump_to_delta_over_overlap_plus_one(overlap: int) -> None:
    """A denoiser that adds a different constant per window (window k: +k delta): the largest step between
    consecutive latent frames is delta / (O + 1) with the cross-fade, and delta without it (windows of 8 latent
    frames, so that one window's cross-fade ends before the next one's begins)."""
    delta, size = 1.0, 8

    def constant_per_window(clean: torch.Tensor, start: int, hold: object) -> torch.Tensor:
        return clean + delta * (start // (size - overlap))

    faded = chain_over(constant_per_window, 6, size=size, overlap=overlap, anchor=0.0)
    hard = chain_over(constant_per_window, 6, size=size, overlap=overlap, anchor=0.0, crossfade=False)
    assert float(faded.diff().abs().max()) <= delta / (overlap + 1) + 1e-6
    assert float(hard.diff().abs().max()) == pytest.approx(delta)


def test_colour_anchor_keeps_drift_within_a_quarter_of_unanchored() -> None:
    """A denoiser that follows the held latents' colour and adds a little (+drift per window), as re-conditioning
    drifts in real models: after 10 windows the anchor keeps the mean within 1/4 of the unanchored drift."""
    step = 0.05

    def drifting(clean: torch.Tensor, start: int, hold: torch.Tensor | None) -> torch.Tensor:
        follow = 0.0 if hold is None else float(hold.mean() - clean[:, :, : hold.shape[2]].mean())
        return clean + follow + step

    free = chain_over(drifting, 10, anchor=0.0)
    anchored = chain_over(drifting, 10, anchor=1.0)
    assert float(free[-1]) == pytest.approx(10 * step, rel=0.05)  # the drift the stub makes
    assert abs(float(anchored[-1])) <= abs(float(free[-1])) / 4


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, says", [
    (["--window", "10"], "--window must follow Wan video-to-video's frame rule 4k+1"),
    (["--window", "9", "--window-overlap", "8"], "--window-overlap must be smaller than the window's 8 new frames"),
    (["--window", "9", "--window-overlap", "3"], "--window-overlap must be a multiple of 4"),
    (["--reference", "ref.png"], "take no reference image; drop --reference"),
    (["--keyframe-every", "4"], "--keyframe-every is for image models"),
])  # fmt: skip
def test_bad_video_options_are_one_line(wan_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        arguments: list[str], says: str) -> None:  # fmt: skip
    from v2v.cli import main

    source = write_clip(tmp_path / "in.mp4", frames=3)
    command = ["restyle", str(source), "-o", str(tmp_path / "o.mp4"), "--model", str(wan_folder), "--prompt", "p",
               *arguments]  # fmt: skip
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and says in error[0], error


def test_a_mask_for_a_family_that_cannot_inpaint_is_one_line(wan_folder: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from v2v.cli import main

    source = write_clip(tmp_path / "in.mp4", frames=3)
    command = ["inpaint", str(source), "-o", str(tmp_path / "o.mp4"), "--mask", str(source), "--model",
               str(wan_folder), "--prompt", "p"]  # fmt: skip
    assert main(command) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is a Wan video-to-video model, which does not inpaint" in error[0], error


# --- memory -------------------------------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.video_stage import VideoModelStage
    from v2v.frames import Frame
    torch.set_num_threads(1)
    stage = VideoModelStage(RestyleConfig(model={model!r}, prompt="p", steps=2, strength=0.5, window=9,
                                          window_overlap=4))
    stage.chain.denoise = lambda clean, start, hold: clean + 0.01  # a stub denoiser: the VAE and windows are real
    def peak():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    list(stage.process(Frame(picture, i, source_index=i, pts=i) for i in range(20)))  # warm up (the allocator settles)
    for count in ({counts}):
        child = os.fork()
        if child == 0:
            frames = (Frame(picture, i, source_index=i, pts=i) for i in range(count))
            for _ in stage.process(frames):
                pass
            print(count, peak(), flush=True)
            os._exit(0)
        os.waitpid(child, 0)
""")


@pytest.mark.slow
def test_peak_memory_is_flat_in_clip_length(wan_folder: Path) -> None:
    """Peak RSS over 1x, 4x and 16x a 5-frame clip (64x48, the real streamed VAE and windows, a stub denoiser),
    each run in a fork of one warmed-up process, within 10% of each other."""
    script = RSS_SCRIPT.format(tests=os.path.dirname(__file__), model=str(wan_folder), counts="5, 20, 80")
    # glibc's sliding mmap threshold keeps freed tensor buffers in the heap, whose high-water mark then wanders by
    # +-8% from run to run; a fixed threshold returns them, so the peak says what the stage holds
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=environment).stdout
    peaks = dict(tuple(map(int, line.split())) for line in out.strip().splitlines())
    assert sorted(peaks) == [5, 20, 80], out
    assert max(peaks.values()) <= 1.10 * min(peaks.values()), peaks
