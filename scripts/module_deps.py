"""The workspace's dependency graphs: between its crates, and between the modules of
each crate (from `use crate::...` and `crate::...` paths).

    python3 scripts/module_deps.py          # prints each crate's dependencies on the
                                            # others and each top-level module's
    python3 scripts/module_deps.py --check  # exits 1 if two top-level modules of a crate
                                            # depend on each other, directly or through
                                            # others, a module uses one FORBIDDEN to it,
                                            # or a crate depends on one (or, through
                                            # others, on an outside crate) it must not

Crates: the hub library (`crates/hub`) depends on no other member and, through no
dependency, on the command line's, the load tool's or a WebSocket client's crates
(CRATE_FORBIDDEN, read from `cargo metadata`); the jobs (`crates/jobs`) only on the hub
library; the programs (the root package) on all. Within each crate, top-level modules
(wire, broker, hub, session, ...) must form a DAG: every dependency runs one way; so must
the sibling modules inside each folder (`broker::redis` and `broker::memory`, ...). A
parent module and its own children may refer to each other; that is how Rust modules are
built and is not counted. An optional first argument is another `src/` to read (its
modules only).
"""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Each member's sources, by package name.
CRATES = {
    "progress-hub-core": ROOT / "crates/hub/src",
    "progress-hub-jobs": ROOT / "crates/jobs/src",
    "progress-hub-bench": ROOT / "crates/bench/src",
    "progress-hub": ROOT / "src",
}
# The members each may depend on (normal dependencies): one way, the libraries first.
CRATE_ALLOWED = {
    "progress-hub-core": set(),
    "progress-hub-jobs": {"progress-hub-core"},
    "progress-hub-bench": {"progress-hub-core"},
    "progress-hub": {"progress-hub-core", "progress-hub-jobs", "progress-hub-bench"},
}
# Outside crates a member must not build, through any normal dependency: an embedder of
# the hub library (or of the jobs) compiles no command line or load tool...
PROGRAM_CRATES = {"clap", "indicatif", "hdrhistogram"}
CRATE_FORBIDDEN = {"progress-hub-core": PROGRAM_CRATES, "progress-hub-jobs": PROGRAM_CRATES}
# ...and uses no WebSocket client (`watch`'s, the load tool's): axum's server side builds
# tokio-tungstenite beneath it, so this one is checked among direct dependencies.
CLIENT_CRATES = {"tokio-tungstenite"}
DIRECT_FORBIDDEN = {"progress-hub-core": CLIENT_CRATES, "progress-hub-jobs": CLIENT_CRATES}
ROOTS = {"lib.rs", "main.rs"}
# What a module must not use, even without a cycle: the broker knows the process's fan-out
# only through its own traits (`broker::Deliveries`, `broker::Watched`), which the hub
# implements; it hands frames on and imports none of the modules after it. (Modules of the
# hub library; the other crates have no such module.)
FORBIDDEN = {"broker": {"hub", "session", "transport", "http", "server", "extension"}}
SRC = ROOT / "src"


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
        # In a top-level module's own file, `super::` is the crate root.
        if len(module_path(path)) == 1:
            found.update(re.findall(r"\bsuper::([a-z_]+)", text))
            for group in re.findall(r"\bsuper::\{([^}]*)\}", text):
                found.update(re.findall(r"\b([a-z_]+)\b", group))
        deps.setdefault(me, set()).update(d for d in found if d != me)
    # Modules only (not the crate root's functions or types).
    for me in deps:
        deps[me] &= set(deps)
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


def check_modules(src: pathlib.Path) -> bool:
    """Prints one crate's module graph; true if it breaks a rule."""
    global SRC
    SRC = src
    deps = graph()
    for module in sorted(deps):
        print(f"  {module:10} -> {', '.join(sorted(deps[module])) or '(nothing)'}")
    found = cycles(deps)
    for folder, g in sorted(sibling_graphs().items()):
        found += [[f"{folder}::{m}" for m in comp] for comp in cycles(g)]
    for comp in found:
        print("  CYCLE:", " <-> ".join(comp))
    if not found:
        print("  no cycles: between top-level modules, nor between siblings in a folder")
    rules = {m: banned for m, banned in FORBIDDEN.items() if m in deps}
    forbidden = [(m, sorted(deps[m] & banned)) for m, banned in rules.items()]
    forbidden = [(m, uses) for m, uses in forbidden if uses]
    for module, uses in forbidden:
        print(f"  FORBIDDEN: {module} uses {', '.join(uses)}")
    if rules and not forbidden:
        print("  no forbidden uses: " + "; ".join(f"{m} uses none of {', '.join(sorted(b))}" for m, b in rules.items()))
    return bool(found or forbidden)


def metadata() -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if out.returncode != 0:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )
    return json.loads(out.stdout)


def check_crates() -> bool:
    """Prints the members' dependencies on each other; true if one breaks a rule."""
    meta = metadata()
    names = {p["id"]: p["name"] for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    members = {names[i]: i for i in meta["workspace_members"]}
    bad = False
    if set(members) != set(CRATES):
        print(f"CRATES: the workspace's members are {sorted(members)}, this script knows {sorted(CRATES)}")
        bad = True

    def normal(node_id: str) -> list[str]:
        return [
            d["pkg"]
            for d in nodes[node_id]["deps"]
            if any(k["kind"] is None for k in d["dep_kinds"])
        ]

    for name, pid in sorted(members.items()):
        direct = {names[d] for d in normal(pid)} & set(members)
        print(f"{name:18} -> {', '.join(sorted(direct)) or '(no member)'}")
        extra = direct - CRATE_ALLOWED.get(name, set())
        extra |= {names[d] for d in normal(pid)} & DIRECT_FORBIDDEN.get(name, set())
        if extra:
            print(f"FORBIDDEN: {name} depends on {', '.join(sorted(extra))}")
            bad = True
        banned = CRATE_FORBIDDEN.get(name)
        if banned:
            seen, todo = set(), [pid]
            while todo:
                for d in normal(todo.pop()):
                    if d not in seen:
                        seen.add(d)
                        todo.append(d)
            built = sorted({names[d] for d in seen} & banned)
            if built:
                print(f"FORBIDDEN: {name} builds {', '.join(built)}")
                bad = True
            else:
                direct_banned = DIRECT_FORBIDDEN.get(name, set())
                print(
                    f"{'':18}    builds none of {', '.join(sorted(banned))}"
                    + (f"; uses no {', '.join(sorted(direct_banned))}" if direct_banned else "")
                )
    return bad


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        bad = check_modules(pathlib.Path(sys.argv[1]))
    else:
        print("crates (normal dependencies):")
        bad = check_crates()
        for name, src in CRATES.items():
            print(f"{name} ({src.relative_to(ROOT)}):")
            bad = check_modules(src) or bad
    if "--check" in sys.argv and bad:
        sys.exit(1)
