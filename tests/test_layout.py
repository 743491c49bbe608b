"""The layout rules: core never imports gradio or studio; importing studio.app does not import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

CORE = PROJECT_ROOT / "core"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_source_never_imports_gradio_or_studio():
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(_imported_modules(path) & {"gradio", "studio", "gradio_client"})
        for path in CORE.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {line.split(".")[0] for line in out.stdout.splitlines()}


def test_importing_every_core_module_loads_neither_gradio_nor_torch():
    modules = sorted(
        ".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name != "__init__.py"
    )
    assert "core.models" in modules and "core.io.images" in modules
    loaded = _modules_after("\n".join(f"import {m}" for m in modules))
    assert "gradio" not in loaded
    assert "torch" not in loaded
    assert "studio" not in loaded


def test_importing_studio_app_does_not_import_torch_or_model_libraries():
    loaded = _modules_after("import studio.app")
    assert "gradio" in loaded  # the check itself is live: the studio does import gradio
    heavy = {"torch", "diffusers", "transformers", "controlnet_aux", "cv2", "pydensecrf"}
    assert loaded & heavy == set()
