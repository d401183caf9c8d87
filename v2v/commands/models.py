"""`v2v models`: every named model of every family (from the restore registry), its task, scale, licence, where
it comes from, and whether it is available here."""

from __future__ import annotations

import argparse

HELP = ("list the named models (super-resolution, video SR, denoising, interpolation, style networks, GAN "
        "translators) and the control-map annotators, and where they come from")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--convert", action="store_true",
                        help="convert every available super-resolution model into the cache now (else on first use)")
    parser.add_argument("--task", default=None,
                        choices=("sr", "video-sr", "denoise", "interpolate", "style", "translate", "annotate"),
                        help="only the models of this task (annotate: the control-map annotators of --control)")


def main(args: argparse.Namespace) -> int:
    from v2v.restore import registry
    from v2v.restore.sr_models import SR_TASKS, cache_dir, describe, named_model_path

    if args.task == "annotate":
        return _annotators()
    rows = [("NAME", "TASK", "SCALE", "FAMILY", "LICENCE", "STATUS", "SOURCE")]
    models = sorted(registry.all_models(args.task), key=lambda model: (registry.TASKS.index(model.task), model.family))
    for model in models:
        if model.task in SR_TASKS:
            status = describe(model)
            if args.convert and status.startswith("available"):
                named_model_path(model)
                status = describe(model)
        else:
            status = model.status()
        source = f"{model.package}: {_files(model.files)}" if model.files else model.package
        aliases = f" (also {', '.join(model.aliases)})" if model.aliases else ""
        rows.append((model.name, model.task, f"x{model.scale}", model.family, model.licence, status, source + aliases))
    _print_table(rows)
    print(f"\nconverted super-resolution models are cached in {cache_dir()}; any other model: v2v upscale --model "
          "PATH (.pth/.safetensors that spandrel recognises, or an ncnn .param)")
    if args.task is None:
        print()
        _annotators()
    return 0


def _annotators() -> int:
    """The control-map annotators (`--control` of restyle, edit and annotate) and whether they can run here."""
    from v2v.diffusion.annotate import annotators

    rows = [("CONTROL", "LICENCE", "STATUS", "SOURCE", "WHAT")]
    rows += [(item.name, item.licence, item.status(), item.source, item.what) for item in annotators()]
    _print_table(rows)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def _files(files: tuple[str, ...]) -> str:
    """`models/x.param/.bin` for an ncnn pair, else the files separated by commas."""
    stems = {file.rsplit(".", 1)[0] for file in files}
    if len(files) > 1 and len(stems) == 1:
        return f"{stems.pop()}." + "/.".join(file.rsplit(".", 1)[1] for file in files)
    return ", ".join(files)
