"""The errors v2v raises.

Every error is a `V2VError`, and where a built-in exception means the same thing the error is also that
built-in (a missing input is a `FileNotFoundError` too), so callers can catch either. The message is one
line that says what is wrong and what to do; the CLI prints it as it is.
"""

from __future__ import annotations


class V2VError(Exception):
    """Root of every error v2v raises on purpose."""

    exit_code = 1


class UsageError(V2VError, ValueError):
    """Options that contradict each other or make no sense together (the CLI exits with 2)."""

    exit_code = 2


class ParameterError(UsageError):
    """A value one parameter cannot take. `str()` names the Python parameter ("fusion must be in [0, 1], got
    2"); the CLI names the parameter's flag instead (`v2v.commands.common.flag`)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled across processes (Ray) with both parts
        return type(self), (self.parameter, self.problem)


class InputError(V2VError, ValueError):
    """An input that exists but cannot be used: not a video, no video stream, mismatched clips."""


class SourceNotFoundError(V2VError, FileNotFoundError):
    """An input path that does not exist."""


class OutputExistsError(V2VError, FileExistsError):
    """The output exists and `overwrite` was not given."""


class OutputError(V2VError, OSError):
    """The output cannot be written (missing or read-only folder, container/codec refused)."""


class ModelError(V2VError, ValueError):
    """A model file that is missing, not a model, or not usable as asked."""


class MissingDependencyError(V2VError, ImportError):
    """An optional extra is not installed; the message says which `pip install` brings it."""


# The extra that installs each optional module v2v imports: how a missing one is named wherever it is met.
EXTRAS = {
    **dict.fromkeys(("torch", "torchvision", "spandrel", "safetensors", "cv2", "kornia"), "torch"),
    **dict.fromkeys(("diffusers", "transformers", "accelerate", "peft", "tomli"), "diffusion"),
    **dict.fromkeys(("matplotlib", "PIL"), "plot"),
    "ray": "ray",
}


def _not_installed(module: str, extra: str) -> MissingDependencyError:
    return MissingDependencyError(f"{module} is not installed; install it with: pip install 'v2v[{extra}]'")


def require(module: str, extra: str) -> object:
    """Import `module`, or raise MissingDependencyError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _not_installed(module, extra) from exc


def missing_dependency(error: ModuleNotFoundError) -> MissingDependencyError | None:
    """A missing optional module met by a plain `import` as the error naming its extra; None for any other module."""
    extra = EXTRAS.get(error.name or "")
    return None if extra is None else _not_installed(error.name, extra)
