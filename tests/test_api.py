"""The package as a library: exported names, lazy imports, typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import v2v


def test_every_exported_name_imports() -> None:
    for name in v2v.__all__:
        assert getattr(v2v, name) is not None, name
    assert v2v.Encoding().codec == "libx264"
    assert issubclass(v2v.InputError, v2v.V2VError) and issubclass(v2v.UsageError, ValueError)
    for stage in ("MapStage", "UpscaleStage", "StabilizeStage", "RestyleStage", "InterpolateStage"):
        assert hasattr(getattr(v2v, stage), "process"), stage


def test_open_is_an_attribute_but_does_not_shadow_the_builtin() -> None:
    assert v2v.open is v2v.open_source
    assert "open" not in v2v.__all__
    namespace: dict[str, object] = {}
    exec("from v2v import *", namespace)
    assert "open" not in namespace and "Encoding" in namespace
    assert "open" in dir(v2v)
    with pytest.raises(AttributeError):
        v2v.no_such_name  # noqa: B018


def test_version_imports_neither_av_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from v2v.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as done:\n    assert done.code == 0\n"
        "print(sorted(m for m in ('av', 'torch', 'numpy', 'PIL', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [f"v2v {v2v.__version__}", "[]"]


def test_ships_the_typing_marker() -> None:
    package = Path(v2v.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text()
    assert 'v2v = ["py.typed"]' in pyproject
