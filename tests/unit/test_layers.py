"""Keep the layers honest: the model does no I/O, edges do not import each other, only the CLI prints."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "airgap"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(sub: str) -> list[Path]:
    base = PKG / sub
    return sorted(base.rglob("*.py")) if base.is_dir() else [PKG / f"{sub}.py"]


def offenders(sub: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in modules(sub):
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PKG)} imports {name}")
    return bad


def test_model_has_no_io_or_edges() -> None:
    assert offenders("model", ("httpx", "click", "tqdm", "airgap.registry", "airgap.transfer", "airgap.cli",
                               "airgap.layout", "os", "pathlib", "subprocess", "socket")) == []


def test_transfer_knows_no_edge() -> None:
    assert offenders("transfer", ("httpx", "click", "tqdm", "airgap.registry", "airgap.cli", "airgap.layout")) == []


def test_only_registry_speaks_http() -> None:
    for sub in ("model", "transfer", "layout", "bundle", "cli", "streams", "errors", "signing", "inputs"):
        assert offenders(sub, ("httpx",)) == [], sub


def test_only_cli_uses_click_and_tqdm() -> None:
    for sub in ("model", "transfer", "layout", "registry", "bundle", "streams", "errors", "copy", "login", "export",
                "importing", "verify", "repair", "signing", "inputs", "audit", "journal", "sources"):
        assert offenders(sub, ("click", "tqdm", "airgap.cli")) == [], sub


def test_edges_do_not_import_each_other() -> None:
    assert offenders("registry", ("airgap.layout", "airgap.transfer", "airgap.cli")) == []
    assert offenders("layout", ("airgap.registry", "airgap.cli", "airgap.bundle")) == []
    assert offenders("bundle", ("airgap.registry", "airgap.cli", "airgap.layout", "httpx")) == []


def test_library_never_prints() -> None:
    for path in PKG.rglob("*.py"):
        if "cli" in path.relative_to(PKG).parts:
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path} calls print()"
