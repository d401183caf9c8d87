"""Restoration models with real weights: super-resolution, video super-resolution, denoising, interpolation.

Every named model is declared once, in its family's module under `v2v/restore/families/` (one file per family,
found by `registry.families()`); `registry.lookup(name)` resolves a name, an alias or a near miss. Networks live
beside the families (`v2v/restore/<family>.py`) and import torch only when a model is loaded.
"""
