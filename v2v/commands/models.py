"""`v2v models`: the named super-resolution models, where each comes from, and whether it is available here."""

from __future__ import annotations

import argparse

HELP = "list the named super-resolution models and where they come from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--convert", action="store_true",
                        help="convert every available named model into the cache now (otherwise on first use)")


def main(args: argparse.Namespace) -> int:
    from v2v.sr.models import NAMED_MODELS, cache_dir, describe_named, named_model_path

    rows = [("NAME", "SCALE", "ARCHITECTURE", "STATUS", "SOURCE")]
    for name, model in NAMED_MODELS.items():
        source, status = describe_named(name)
        if args.convert and status.startswith("available"):
            named_model_path(name)
            source, status = describe_named(name)
        rows.append((name, f"x{model.scale}", model.architecture, status, source))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    print(f"\nconverted models are cached in {cache_dir()}; any other model: v2v upscale --model PATH "
          "(.pth/.safetensors that spandrel recognises, or an ncnn .param)")
    return 0
