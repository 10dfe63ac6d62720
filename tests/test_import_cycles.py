"""No import circle among the project's files: every import counts, at module level, inside a function (a lazy
import hides a circle, it does not remove it) and under TYPE_CHECKING (a type is a dependency too)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "storage", "bot", "scripts")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = f
    return files


def imported_modules(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                if child in known:
                    out.add(child)
                elif module in known:
                    out.add(module)
    out.discard(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def project_graph() -> dict[str, set[str]]:
    known = module_files()
    return {name: imported_modules(path, name, known) for name, path in known.items()}


def test_no_import_circle_among_project_files():
    graph = project_graph()
    found = cycles(graph)
    lines = []
    for component in found:
        members = set(component)
        ties = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
        lines.append(f"circle of {len(component)}: " + "; ".join(ties))
    assert not found, "\n".join(lines)


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def package_graph(depth: int = 2) -> dict[str, set[str]]:
    """The file graph folded to packages `depth` names deep (core.news, core.signals, bot.delivery, ...)."""
    folded: dict[str, set[str]] = {}
    for module, targets in project_graph().items():
        source = ".".join(module.split(".")[:depth])
        folded.setdefault(source, set()).update(".".join(t.split(".")[:depth]) for t in targets)
    for source, targets in folded.items():
        targets.discard(source)
    return folded


def test_signals_and_news_depend_in_one_direction():
    """core.news may build on core.signals (the voter's opinion, the reasoning writers); core.signals reaches the
    LLMs through core.llm and core.resilience, never through core.news."""
    graph = package_graph()
    assert "core.news" not in graph.get("core.signals", set()), "core/signals imports core/news"
