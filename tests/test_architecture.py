"""The shape of the code, checked: layers import one way, no file cycles, no private names
across modules, no argparse below the CLI, light imports stay light, ruff is clean.

The layers are declared once, in pyproject.toml ([tool.importlinter]); ARCHITECTURE.md explains them.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
BIN = Path(sys.executable).parent


def _library_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_product_package_is_in_the_layers_contract():
    setuptools_packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(setuptools_packages) == sorted(PACKAGES)


def test_lint_imports_keeps_the_layers_contract():
    done = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_no_module_import_cycles():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module.startswith(imported + ".") or imported.startswith(module + "."):
                continue  # a package and its own submodules (`__init__` re-exports)
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert not cycles, cycles


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] in PACKAGES:  # ours; datasketch internals are reused on purpose
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_every_stage_records_its_run_one_way():
    """store.runs.recorded_run is the one way to record a run (done / failed / cached, timings, no secrets)."""
    found = []
    for path in _library_files():
        if path.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("start_run", "finish_run"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not found, found


def _is_cli(path: Path) -> bool:
    return path.parts[-2] == "distill" or path.name.startswith("cli")


def test_no_argparse_namespace_below_the_cli():
    """Library functions take typed settings; only the CLI (distill/, */cli*.py, script `main`s) sees flags."""
    found = []
    for path in _library_files():
        if _is_cli(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "main":
                params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({a.arg})" for a in params
                          if a.annotation is not None and "Namespace" in ast.unparse(a.annotation)]
    assert not found, found


@pytest.mark.parametrize("module", ["store.store", "clients.api", "engine.api_engine", "synth.cot", "curation.dedup",
                                    "prompts.data", "evals.settings", "evals.results", "serve.cli", "distill.cli"])
def test_light_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False", f"importing {module} loads torch"


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"], ["serve", "--help"], ["data", "--help"]])
def test_cli_help_does_not_import_torch(argv):
    code = (f"import sys; from distill.cli import main\ntry: main({argv!r})\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_ruff_is_clean():
    done = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_library_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _library_files() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_each_public_name_is_defined_once():
    """A class or function name means one thing across the packages (`GenParams` was defined twice)."""
    where: dict[str, list[str]] = {}
    for path in _library_files():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_") \
                    and node.name != "main":  # every script has its own entry point
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: files for name, files in where.items() if len(files) > 1}
