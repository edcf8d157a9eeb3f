"""The crate's module dependency graph, from `use crate::...` and `crate::...` paths.

    python3 scripts/module_deps.py          # prints each top-level module's dependencies
    python3 scripts/module_deps.py --check  # exits 1 if two top-level modules depend on
                                            # each other, directly or through others, or
                                            # a module uses one FORBIDDEN to it

Top-level modules (wire, broker, hub, session, ...) must form a DAG: every dependency
runs one way; so must the sibling modules inside each folder (`broker::redis` and
`broker::memory`, ...). A parent module and its own children may refer to each other;
that is how Rust modules are built and is not counted. An optional first argument is
another `src/` to read.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else pathlib.Path(__file__).resolve().parent.parent / "src")
ROOTS = {"lib.rs", "main.rs"}
# What a module must not use, even without a cycle: the broker knows the process's fan-out
# only through its own traits (`broker::Deliveries`, `broker::Watched`), which the hub
# implements; it hands frames on and imports none of the modules after it.
FORBIDDEN = {"broker": {"hub", "session", "transport", "http", "server"}}


def top_module(path: pathlib.Path) -> str | None:
    rel = path.relative_to(SRC)
    if rel.parts[0] == "bin" or rel.name in ROOTS and len(rel.parts) == 1:
        return None
    return rel.parts[0].removesuffix(".rs")


def graph() -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        me = top_module(path)
        if me is None:
            continue
        text = re.sub(r"//[^\n]*", "", path.read_text(encoding="utf-8"))
        # Only what the module itself uses, not its unit tests.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        found = set(re.findall(r"\bcrate::([a-z_]+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            found.update(re.findall(r"\b([a-z_]+)\b", group))
        deps.setdefault(me, set()).update(d for d in found if d != me)
    return deps


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in deps:
                continue
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
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def module_path(path: pathlib.Path) -> list[str]:
    parts = list(path.relative_to(SRC).parts)
    last = parts.pop().removesuffix(".rs")
    if last != "mod":
        parts.append(last)
    return parts


def sibling_graphs() -> dict[str, dict[str, set[str]]]:
    """For each folder, the dependencies among its direct children."""
    out: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        if top_module(path) is None:
            continue
        me = module_path(path)
        if len(me) < 2:
            continue
        parent, name = me[:-1], me[-1]
        text = re.sub(r"//[^\n]*", "", path.read_text(encoding="utf-8"))
        text = text.split("#[cfg(test)]\nmod tests")[0]
        targets: set[str] = set()
        for full in re.findall(r"\bcrate::((?:[a-z_]+::)*[a-z_]+)", text):
            p = full.split("::")
            if p[: len(parent)] == parent and len(p) > len(parent):
                targets.add(p[len(parent)])
        for rel in re.findall(r"\bsuper::((?:[a-z_]+::)*[a-z_]+|\{[^}]*\})", text):
            names = (
                re.findall(r"\b[a-z][a-z0-9_]*\b", rel)
                if rel.startswith("{")
                else [rel.split("::")[0]]
            )
            targets.update(names)
        graph_of = out.setdefault("::".join(parent), {})
        graph_of.setdefault(name, set()).update(t for t in targets if t != name)
    for g in out.values():
        names = set(g)
        for k in g:
            g[k] &= names
    return out


if __name__ == "__main__":
    deps = graph()
    for module in sorted(deps):
        print(f"{module:10} -> {', '.join(sorted(deps[module])) or '(nothing)'}")
    found = cycles(deps)
    for folder, g in sorted(sibling_graphs().items()):
        found += [[f"{folder}::{m}" for m in comp] for comp in cycles(g)]
    for comp in found:
        print("CYCLE:", " <-> ".join(comp))
    if not found:
        print("no cycles: between top-level modules, nor between siblings in a folder")
    forbidden = [(m, sorted(deps.get(m, set()) & banned)) for m, banned in FORBIDDEN.items()]
    forbidden = [(m, uses) for m, uses in forbidden if uses]
    for module, uses in forbidden:
        print(f"FORBIDDEN: {module} uses {', '.join(uses)}")
    if not forbidden:
        print("no forbidden uses: " + "; ".join(f"{m} uses none of {', '.join(sorted(b))}" for m, b in FORBIDDEN.items()))
    if "--check" in sys.argv and (found or forbidden):
        sys.exit(1)
