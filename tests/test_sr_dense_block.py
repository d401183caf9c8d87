"""RRDBNet's dense blocks concatenating into shared buffers: the same output, buffers made once, not pickled."""

from __future__ import annotations

import copy
import pickle

import torch
from spandrel.architectures.ESRGAN import ESRGAN

from v2v.restore.dense_block import DenseBlock, share_dense_block_buffers


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    network = ESRGAN(num_filters=16, num_blocks=2, scale=4).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    return network


def test_same_output_as_torch_cat_with_buffers_made_once():
    original = _network().to(memory_format=torch.channels_last)
    shared = copy.deepcopy(original)
    assert share_dense_block_buffers(shared) == 2 * 3
    blocks = [module for module in shared.modules() if isinstance(module, DenseBlock)]
    workspace = blocks[0].workspace
    assert all(block.workspace is workspace for block in blocks)
    with torch.inference_mode():
        for size in [(20, 24), (16, 12)]:
            x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
            assert torch.equal(shared(x), original(x))
    assert sorted(workspace.buffers) == [48, 80, 112, 144]  # 16 features + k * 32 growth channels
    assert all(buffer.shape[-2:] == (16, 12) for buffer in workspace.buffers.values())  # rebuilt for the new size


def test_buffers_are_reused_from_frame_to_frame():
    shared = _network().to(memory_format=torch.channels_last)
    share_dense_block_buffers(shared)
    workspace = next(module for module in shared.modules() if isinstance(module, DenseBlock)).workspace
    x = torch.rand(1, 3, 20, 24).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        shared(x)
        first = {channels: buffer.data_ptr() for channels, buffer in workspace.buffers.items()}
        shared(x)
    assert {channels: buffer.data_ptr() for channels, buffer in workspace.buffers.items()} == first


def test_outside_inference_mode_concatenates_as_before():
    original = _network()
    shared = copy.deepcopy(original)
    share_dense_block_buffers(shared)
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    assert torch.equal(shared(x), original(x))  # autograd keeps each concatenation: no shared buffer
    workspace = next(module for module in shared.modules() if isinstance(module, DenseBlock)).workspace
    assert workspace.buffers == {}


def test_pickles_without_its_buffers():
    shared = _network().to(memory_format=torch.channels_last)
    share_dense_block_buffers(shared)
    x = torch.rand(1, 3, 20, 24).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = shared(x)
    copied = pickle.loads(pickle.dumps(shared))
    workspace = next(module for module in copied.modules() if isinstance(module, DenseBlock)).workspace
    assert workspace.buffers == {}
    with torch.inference_mode():
        assert torch.equal(copied(x), expected)
