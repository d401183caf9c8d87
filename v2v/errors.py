"""The errors v2v raises.

Every error is a `V2VError`, and where a built-in exception means the same thing the error is also that
built-in (a missing input is a `FileNotFoundError` too), so callers can catch either. The message is one
line that says what is wrong and what to do; the CLI prints it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

_Error = TypeVar("_Error", bound="V2VError")


class V2VError(Exception):
    """Root of every error v2v raises on purpose.

    A message that names parameters is made with `naming`: `str()` says each as the Python parameter, and the CLI
    says its flag (`message(flag)`, `v2v.commands.common.error_message`)."""

    exit_code = 1

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # instance attributes, not class ones: Ray's error that stands for this one finds them on this one
        self.template: str | None = None  # the message with each parameter it names as a {field}; None: plain
        self.values: Mapping[str, Any] = {}  # the template's other fields

    @classmethod
    def naming(cls: type[_Error], template: str, **values: Any) -> _Error:
        """This error with a message that names parameters: each `{field}` of `template` not among `values` is a
        Python parameter (`UsageError.naming("{true_cfg} must be > 1, got {value}", value=cfg)`). Values go in
        as fields, never into the template itself, so braces in a path or a prompt stay text."""
        error = cls(_render(template, values, str))
        error.template, error.values = template, dict(values)
        return error

    def message(self, name: Callable[[str], str] = str) -> str:
        """The one line with each parameter it names said as `name(parameter)`; `str()` is `message()`."""
        return str(self) if self.template is None else _render(self.template, self.values, name)

    def __reduce__(self) -> Any:  # pickled across processes (Ray) with its template, so the CLI can say flags
        if self.template is None:
            return super().__reduce__()
        return _named, (type(self), self.template, dict(self.values))


def _render(template: str, values: Mapping[str, Any], name: Callable[[str], str]) -> str:
    """`template` with its values in place and every other field (a parameter) as `name(field)`."""
    return template.format_map(_Fields(values, name))


class _Fields(dict):  # type: ignore[type-arg]
    """A template's values; a field not among them is a parameter, said as `name(parameter)`."""

    def __init__(self, values: Mapping[str, Any], name: Callable[[str], str]) -> None:
        super().__init__(values)
        self.name = name

    def __missing__(self, parameter: str) -> str:
        return self.name(parameter)


def _named(kind: type[V2VError], template: str, values: Mapping[str, Any]) -> V2VError:
    """`kind.naming(template, **values)`: how a pickled error with a template is rebuilt."""
    return kind.naming(template, **values)


class UsageError(V2VError, ValueError):
    """Options that contradict each other or make no sense together (the CLI exits with 2)."""

    exit_code = 2


class ParameterError(UsageError):
    """A value one parameter cannot take: `naming` with that one parameter first, the parameter and the problem
    kept apart. `str()` names the Python parameter ("fusion must be in [0, 1], got 2"), the CLI its flag."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem
        self.template, self.values = "{" + parameter + "} {problem}", {"problem": problem}

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
    **dict.fromkeys(("onnx", "onnxruntime"), "style"),
    **dict.fromkeys(("h5py", "ai_edge_litert", "flatbuffers"), "masks"),
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
