"""The package layout of dcme_layers: imports run one way between subpackages, nothing private crosses a module,
every package lists its modules in ``__all__``, no module outgrows a screenful of concerns."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "dcme_layers"
#: What each subpackage may import from the project: the layers below it (util <- core <- data <- evaluation, net <-
#: pipeline); ``evaluation`` and ``net`` never import each other.
ALLOWED = {
    "util": {"util"},
    "core": {"util", "core"},
    "data": {"util", "core", "data"},
    "evaluation": {"util", "core", "data", "evaluation"},
    "net": {"util", "core", "data", "net"},
    "pipeline": {"util", "core", "data", "evaluation", "net", "pipeline"},
}
MAX_LINES = 300
SOURCES = sorted(p for d in ("dcme_layers", "tools", "models", "tests") for p in (REPO / d).rglob("*.py"))


def project_imports(path):
    """(module, names) of every ``from dcme_layers... import`` / ``import dcme_layers...`` in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("dcme_layers", "models"):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("dcme_layers", "models"):
                    yield a.name, []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    wrong = []
    for path in sorted((ROOT / package).glob("*.py")):
        for module, names in project_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else names[0] if names else ""
            if parts[0] == "models" or target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)} imports {module} {names}")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_across_modules():
    wrong = [f"{p.relative_to(REPO)}: from {m} import {n}" for p in SOURCES for m, names in project_imports(p)
             for n in names if n.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_every_package_lists_its_modules():
    packages = sorted(p.parent for p in ROOT.glob("*/__init__.py"))
    assert [p.name for p in packages] == sorted(ALLOWED)
    for package in packages:
        tree = ast.parse((package / "__init__.py").read_text())
        listed = next(ast.literal_eval(n.value) for n in tree.body
                      if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
        assert listed == sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__"), package


def test_every_module_declares_its_public_names():
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"]
        assert names, f"{path.relative_to(REPO)} has no __all__"
        listed = ast.literal_eval(names[0].value)
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert set(listed) <= defined | {"__version__"} or path.name == "__init__.py", path


def test_no_module_is_longer_than_a_limit():
    long = [f"{p.relative_to(REPO)}: {n}" for p in SOURCES if not p.parts[-2] == "tests"
            for n in [len(p.read_text().splitlines())] if n > MAX_LINES]
    assert not long, "\n".join(long)
