"""The design's import rules: bot -> storage -> core; scripts -> storage, core (bot never imports scripts); vendor
SDKs in one adapter each."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENDORS = {"yfinance", "curl_cffi", "ccxt", "pandas_ta", "talib", "lightgbm", "openai", "anthropic", "stripe", "telegram",
           "discord", "apscheduler", "sqlmodel", "sqlalchemy", "aiosqlite", "onnxruntime", "onnx", "tokenizers",
           "jax"}
FORBIDDEN = {
    "core": {"bot", "storage", "scripts", "sqlmodel", "sqlalchemy", "aiosqlite", "telegram", "discord", "stripe",
             "apscheduler"},
    "storage": {"bot", "scripts"},
    "scripts": {"bot"},
    "bot": {"scripts"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def py_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_layers_import_in_one_direction():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for f in py_files(package):
            hit = imports_of(f) & forbidden
            if hit:
                bad.append(f"{f.relative_to(REPO)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_each_vendor_sdk_is_imported_by_few_adapter_modules():
    users: dict[str, list[str]] = {}
    for package in ("core", "storage", "bot", "scripts"):
        for f in py_files(package):
            for v in imports_of(f) & VENDORS:
                users.setdefault(v, []).append(str(f.relative_to(REPO)))
    storage_sdks = {"sqlmodel", "sqlalchemy", "aiosqlite"}
    for vendor, files in users.items():
        if vendor in storage_sdks:
            assert all(f.startswith("storage/") for f in files), (vendor, files)
        else:
            assert len(files) == 1, f"{vendor} is imported by {files}; wrap it in one adapter"


def test_every_table_is_defined_in_the_schema_module():
    """storage/tables.py holds the whole schema: a table model anywhere else is one create_all may not see."""
    elsewhere = []
    for package in ("core", "storage", "bot", "scripts"):
        for f in py_files(package):
            if f == REPO / "storage" / "tables.py":
                continue
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.ClassDef) and any(
                        k.arg == "table" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords):
                    elsewhere.append(f"{f.relative_to(REPO)}: {node.name}")
    assert not elsewhere, elsewhere


def test_commands_and_delivery_reach_the_stores_through_the_ports():
    """bot/commands, bot/delivery and the health probe use the repositories through core.ports (the bundle comes in
    as core.ports.Repositories or StoreBundle, via CommandServices); from storage they may import only the database
    error test and the published backtest reports (files, not a store)."""
    allowed = {"storage", "storage.backtest_reports"}  # `storage` for is_database_error
    bad = []
    files = [*py_files("bot/commands"), *py_files("bot/delivery"), REPO / "bot" / "health.py"]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
                if node.module == "storage" and any(a.name != "is_database_error" for a in node.names):
                    bad.append(f"{f.relative_to(REPO)} imports {[a.name for a in node.names]} from storage")
            else:
                continue
            bad += [f"{f.relative_to(REPO)} imports {m}" for m in modules
                    if (m == "storage" or m.startswith("storage.")) and m not in allowed]
    assert not bad, bad
