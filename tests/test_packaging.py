"""The three folders install as ``gmparse.models``, ``gmparse.data_pipeline`` and ``gmparse.workflows``
(pyproject.toml's package-dir), so they never collide with a user's own ``models`` package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

from conftest import REPO_ROOT

FOLDERS = ("data_pipeline", "models", "workflows")


def _packages_on_disk() -> set[str]:
    found = set()
    for folder in FOLDERS:
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT)
            found.add(".".join(("gmparse", *rel.parts)))
    return found


def test_every_package_folder_is_installed_under_gmparse():
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _packages_on_disk()
    assert cfg["package-dir"] == {f"gmparse.{f}": f for f in FOLDERS}


def test_a_foreign_models_package_does_not_shadow_gmparse(tmp_path):
    """Another ``models`` (and ``workflows``) first on the path, the working directory elsewhere."""
    for name in ("models", "workflows", "data_pipeline"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"FOREIGN = {name!r}\n")
    code = ("import models, workflows, data_pipeline\n"
            "assert models.FOREIGN == 'models' and workflows.FOREIGN == 'workflows'\n"
            "from gmparse.models import ParsingModel\n"
            "from gmparse.data_pipeline.build import build_config\n"
            "from gmparse.workflows.lib.job import start_job\n"
            "import gmparse.models as gm\n"
            "print(gm.__file__)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("models/__init__.py") and str(tmp_path) not in r.stdout


def test_the_wheel_holds_only_the_gmparse_namespace(tmp_path):
    """A wheel built from the tree (no network: the venv's setuptools) installs nothing top-level
    but ``gmparse/``."""
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / f, src / f)
    for folder in FOLDERS:
        shutil.copytree(REPO_ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("gmparse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"gmparse"}
    for must in ("gmparse/models/__init__.py", "gmparse/workflows/lib/train_loop.py", "gmparse/workflows/cv_folds.py",
                 "gmparse/data_pipeline/zoo/families/gan.py"):
        assert must in names
    assert not any(n.startswith("gmparse/__init__") for n in names)  # a namespace, as the editable install


def test_no_script_edits_sys_path():
    hits = [str(p.relative_to(REPO_ROOT)) for folder in ("workflows", "benchmarks")
            for p in (REPO_ROOT / folder).rglob("*.py") if "sys.path.insert" in p.read_text()]
    assert hits == []


def _module_name(path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("gmparse", *parts))


def import_graph() -> dict[str, set[str]]:
    """Every gmparse module -> the gmparse modules it imports, anywhere in its body (deferred imports
    and ``TYPE_CHECKING`` blocks included)."""
    import ast

    modules = {_module_name(p): p for f in FOLDERS for p in (REPO_ROOT / f).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + "."):  # a package's own __init__ is not a cycle
                    graph[mod].add(t)
    return graph


def test_no_two_modules_import_each_other():
    """No import cycle among gmparse's modules, directly or through others (Tarjan's SCCs)."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []
    assert "gmparse.data_pipeline.realism" in graph["gmparse.data_pipeline.zoo.quality"]  # the graph sees imports


def test_layers_import_one_way():
    """data_pipeline -> models -> workflows: models never imports Ray, MLflow or workflows; data_pipeline
    never imports workflows."""
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith(("gmparse.models", "gmparse.data_pipeline")):
            assert not any(d.startswith("gmparse.workflows") for d in deps), mod
    for path in (REPO_ROOT / "models").rglob("*.py"):
        text = path.read_text()
        assert "import ray" not in text and "import mlflow" not in text, path


def test_every_file_the_code_cites_exists():
    """A docstring or comment that names a file of this repository names one that is here (once
    the code cited a PAPER.md that never was). docs/ pages are checked the same way."""
    import re

    pattern = re.compile(r"(?<![\w./])((?:docs|benchmarks|cluster|tests|workflows|models|data_pipeline)/[\w./-]+\.(?:md|py|png|yaml))")
    missing = []
    for folder in (*FOLDERS, "benchmarks", "tests", "cluster"):
        for p in (REPO_ROOT / folder).rglob("*.py"):
            missing += [f"{p.relative_to(REPO_ROOT)}: {m}" for m in pattern.findall(p.read_text())
                        if not (REPO_ROOT / m).exists()]
    assert missing == []


def test_every_relative_link_in_the_docs_resolves():
    import re

    missing = []
    for md in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), REPO_ROOT / "cluster" / "README.md",
               REPO_ROOT / "benchmarks" / "RESULTS.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (md.parent / target).exists():
                missing.append(f"{md.relative_to(REPO_ROOT)} -> {target}")
    assert missing == []


def test_readme_is_a_front_page():
    """At most 200 lines and no MLflow run ids or collection keys (8+ hex characters): those belong
    in docs/decisions.md with their dates."""
    import re

    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    ids = [t for t in re.findall(r"\b[0-9a-f]{8,}\b", text) if re.search(r"\d", t) and re.search(r"[a-f]", t)]
    assert ids == []


def test_results_sections_are_numbered_in_order():
    """benchmarks/RESULTS.md's sections run 1, 2, 3, ... (common.render numbers them; once they ran
    1, 2, 2b, 5, 3, 7, 4, 6, 8, 6)."""
    import re

    numbers = re.findall(r"^## (\d+[a-z]?)\. ", (REPO_ROOT / "benchmarks" / "RESULTS.md").read_text(), flags=re.M)
    assert numbers == [str(i) for i in range(1, len(numbers) + 1)] and len(numbers) >= 10


def test_every_test_the_docs_name_exists():
    """cluster/README.md's fault table (and any page) names tests as ``tests/<file>.py::<test>``: each
    must be a test function of that file."""
    import re

    missing = []
    for md in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), REPO_ROOT / "cluster" / "README.md"]:
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", md.read_text()):
            f = REPO_ROOT / path
            if not f.exists() or f"def {name}(" not in f.read_text():
                missing.append(f"{md.name}: {path}::{name}")
    assert missing == []
