"""InstantID on SDXL (`v2v restyle ... --identity FACE.png --instantid DIR --face-encoder ARCFACE.onnx`): a face's
identity kept from one photo, as InstantID's authors' diffusers pipeline does it, on v2v's own SDXL path.

`DIR` is laid out as InstantX/InstantID ships it: `ControlNetModel/` (IdentityNet, a diffusers ControlNet) and
`ip-adapter.bin` (the face adapter: `image_proj`, a Resampler, and `ip_adapter`, the attention layers' key/value
projections, 16 tokens).

- The identity embedding: the photo's face through the user's ArcFace model (`faces.identity_embedding`), once per
  run; a photo with no face is refused in one line.
- The face adapter: loaded by diffusers' own IP-Adapter loader (its Resampler is IP-Adapter Plus's image projection;
  no CLIP image encoder: the embedding is the "image embeds"), so the UNet's cross-attention reads the face tokens
  beside the text, at `scale`. The unconditional copy of classifier-free guidance gets a zero embedding through the
  projection, as the authors' pipeline does.
- IdentityNet: a ControlNet on the frame's five face keypoints (`faces.keypoint_image`, from MediaPipe's detector per
  frame). As in the authors' pipeline it attends to the face tokens, not the text: a forward pre-hook on it swaps
  its `encoder_hidden_states` for the projected face tokens. A frame without a face gets a black map and IdentityNet
  at scale 0 (its residuals multiplied by 0 for that frame alone), and the run logs how many frames had none.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from v2v.errors import ModelError, UsageError

log = logging.getLogger(__name__)

IDENTITYNET = "ControlNetModel"
FACE_ADAPTERS = ("ip-adapter.bin", "ip-adapter.safetensors")


class FaceKeypointMaps:
    """The control map maker of IdentityNet (called as `control.make_control`'s makers are): frames (B, 3, H, W) in
    [0, 1] -> keypoint images (B, 3, H, W) in [0, 1]; `presence` (B,) says which frames had a face."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.presence: Any = None
        self.frames = self.faceless = 0

    def __call__(self, frames: Any) -> Any:
        import torch

        from v2v.diffusion.faces import face_points, keypoint_image
        from v2v.frames import images_to_tensor, tensor_to_images

        height, width = frames.shape[-2:]
        maps, found = [], []
        for image in tensor_to_images(frames):
            points = face_points(self.detector, image)
            maps.append(keypoint_image(points, height, width))
            found.append(points is not None)
        self.frames += len(found)
        self.faceless += found.count(False)
        self.presence = torch.tensor(found, dtype=torch.float32)
        return images_to_tensor(maps, frames.device, frames.dtype)

    def close(self) -> None:
        """The end of a pass: say how many frames had no face."""
        if self.faceless:
            log.warning("InstantID: %d of %d frames had no face; IdentityNet ran at scale 0 on them",
                        self.faceless, self.frames)
        elif self.frames:
            log.info("InstantID: a face on each of the %d frames", self.frames)
        self.frames = self.faceless = 0


class InstantID:
    """InstantID's parts for one stage (see the module docstring). Made before the base loads (the photo and the files
    are checked, the embedding computed); `controlnet_path` joins the stage's ControlNets; `attach(pipe, guided)`
    after the base loads gives the IP-Adapter embeds for `Batch.ip_adapter_embeds`."""

    def __init__(self, folder: str, photo: str, face_encoder: str, scale: float, family: Any) -> None:
        from v2v.diffusion.faces import FaceDetector, FaceEncoder, identity_embedding

        if family.name != "sdxl":
            raise ModelError(f"InstantID is made for Stable Diffusion XL; the base model is {family.title}")
        from v2v.diffusion.models import resolve_path

        root = resolve_path(folder, "InstantID folder")  # a local folder, or the hub's InstantX/InstantID
        if not (root / IDENTITYNET / "config.json").is_file():
            raise ModelError(f"InstantID folder {folder} has no {IDENTITYNET}/config.json (IdentityNet); pass the "
                             "folder of InstantX/InstantID (ControlNetModel/ and ip-adapter.bin)")
        adapters = [root / name for name in FACE_ADAPTERS if (root / name).is_file()]
        if not adapters:
            raise ModelError(f"InstantID folder {folder} has no face adapter ({' or '.join(FACE_ADAPTERS)})")
        self.controlnet_path = str(root / IDENTITYNET)
        self.adapter = adapters[0]
        self.scale = scale
        detector = FaceDetector()
        self.embedding = identity_embedding(photo, FaceEncoder(face_encoder), detector)
        log.info("InstantID: identity from %s (%d-number embedding from %s)", photo, self.embedding.size,
                 os.path.basename(face_encoder))
        self.keypoints = FaceKeypointMaps(detector)
        self.tokens: Any = None  # the projected face tokens per guidance copy, (groups, tokens, width)

    def attach(self, pipe: Any, guided: bool) -> list[Any]:
        """Load the face adapter into `pipe`, hook IdentityNet, and return the IP-Adapter embeds (zero embedding for
        the unconditional copy when `guided`)."""
        import torch

        from v2v.diffusion.models import first_line

        embedding = self.embedding
        width = pipe.unet.config.cross_attention_dim
        try:
            pipe.load_ip_adapter(str(self.adapter.parent), subfolder="", weight_name=self.adapter.name,
                                 image_encoder_folder=None)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load InstantID's face adapter {self.adapter} into a base with text width "
                             f"{width}: {first_line(exc)}") from exc
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        wanted = int(projection.proj_in.in_features)
        if wanted != embedding.size:
            raise ModelError(f"face adapter {self.adapter} takes {wanted}-number face embeddings; the face encoder "
                             f"gives {embedding.size}; pass the ArcFace model InstantID was trained with")
        pipe.set_ip_adapter_scale(self.scale)
        positive = torch.from_numpy(embedding).to(pipe.device, pipe.dtype).view(1, 1, 1, -1)
        embeds = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        with torch.inference_mode():
            self.tokens = pipe.unet.encoder_hid_proj([embeds])[0].flatten(1, 2)
        controlnet = pipe.controlnet
        nets = getattr(controlnet, "nets", [controlnet])
        nets[-1].register_forward_pre_hook(self._identity_net, with_kwargs=True)  # IdentityNet comes last
        return [embeds]

    def _identity_net(self, net: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """IdentityNet's forward pre-hook: it attends to the face tokens (one copy per frame of each guidance copy),
        and its residuals are scaled by 0 on frames without a face."""
        states = kwargs["encoder_hidden_states"]
        groups = self.tokens.shape[0]
        frames = states.shape[0] // groups
        kwargs["encoder_hidden_states"] = self.tokens.to(states).repeat_interleave(frames, dim=0)
        presence = self.keypoints.presence
        if presence is not None and len(presence) == frames and not bool(presence.all()):
            scale = kwargs.get("conditioning_scale", 1.0)
            kwargs["conditioning_scale"] = presence.to(states).repeat(groups).view(-1, 1, 1, 1) * scale
        return args, kwargs


def check_identity_options(identity: str | None, instantid: str | None, face_encoder: str | None,
                           ip_adapter: str | None) -> None:
    """UsageError (one line) for InstantID's options given apart."""
    if identity and not (instantid and face_encoder):
        raise UsageError.naming("{identity} needs {instantid} DIR (IdentityNet and the face adapter) and "
                                "{face_encoder} ARCFACE.onnx")
    if (instantid or face_encoder) and not identity:
        raise UsageError.naming("{instantid} and {face_encoder} need {identity} FACE.png (whose face to keep)")
    if identity and ip_adapter:
        raise UsageError.naming("{identity} brings InstantID's face adapter; it does not combine with {ip_adapter}")
