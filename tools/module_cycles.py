#!/usr/bin/env python3
"""One direction of dependencies, and small files: the check CI runs.

For every crate of the workspace (a folder with Cargo.toml and src/), each
top-level module (src/X.rs or src/X/) is a node, and `crate::Y` in code of
module X (comments and `#[cfg(test)]` parts left out) is an edge X -> Y,
also inside `use crate::{Y, Z::..}`. Prints every import cycle (a strongly
connected component of more than one module) with one edge path around it,
and every non-test source file over MAX_LINES (default 620, "about 600") lines that
does not say why at its top: a line `//! Long file: <reason>` in its first
20 lines. Exit 1 when either is found.

    python3 tools/module_cycles.py .           # the check
    python3 tools/module_cycles.py . --edges   # also print each crate's edges
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
show_edges = "--edges" in sys.argv
root = args[0] if args else "."
# "About 600": a file a few lines over is not worth a split.
max_lines = int(os.environ.get("MAX_LINES", "620"))
skip = {"vendor", "target", "fuzz", ".git", "node_modules"}
ident = re.compile(r"^[a-z_][a-z0-9_]*$")


def code_of(text):
    """The text before the first #[cfg(test)], without comments."""
    body = text.split("#[cfg(test)]")[0]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return "\n".join(line.split("//")[0] if "//" in line and '"' not in line.split("//")[0] else
                     ("" if line.lstrip().startswith("//") else line)
                     for line in body.splitlines())


def targets(code):
    out = set()
    for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", code):
        out.add(m.group(1))
    for m in re.finditer(r"crate::\{", code):
        depth, i, start, parts = 1, m.end(), m.end(), []
        while i < len(code) and depth:
            c = code[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "," and depth == 1:
                parts.append(code[start:i])
                start = i + 1
            i += 1
        parts.append(code[start:i - 1])
        for p in parts:
            name = p.strip().split("::")[0].strip()
            if ident.match(name) and name != "self":
                out.add(name)
    return out


def has_reason(text):
    return any(line.startswith("//! Long file:") for line in text.splitlines()[:20])


crates = []
for dirpath, dirnames, files in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
    if "Cargo.toml" in files and os.path.isdir(os.path.join(dirpath, "src")):
        crates.append(dirpath)

cycles, long_files = 0, []
for crate in crates:
    src = os.path.join(crate, "src")
    edges = {}
    for dp, _, fs in os.walk(src):
        for f in sorted(fs):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dp, f)
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            text = open(path, encoding="utf-8", errors="replace").read()
            n = text.split("#[cfg(test)]")[0].count("\n")
            is_test = "/tests/" in path or f == "tests.rs" or "/bin/" in path
            if not is_test and n > max_lines and not has_reason(text):
                long_files.append((n, os.path.relpath(path, root)))
            if top in ("lib", "main"):
                continue
            for t in targets(code_of(text)):
                if t != top:
                    edges.setdefault(top, {}).setdefault(t, rel)
    if show_edges:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{os.path.relpath(crate, root)}: {a} -> {b} ({edges[a][b]})")
    # Tarjan's strongly connected components.
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
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
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            strong(v)
    for comp in comps:
        if len(comp) < 2:
            continue
        cycles += 1
        members = set(comp)
        # One path around the cycle, each edge with the file that makes it.
        start = sorted(comp)[0]
        path, seen, v = [start], {start}, start
        while True:
            nxt = sorted(w for w in edges.get(v, {}) if w in members)
            back = [w for w in nxt if w == start and len(path) > 1]
            fresh = [w for w in nxt if w not in seen]
            w = back[0] if back else (fresh[0] if fresh else nxt[0])
            path.append(f"{w} [{edges[v][w]}]")
            if w in seen:
                break
            seen.add(w)
            v = w
        print(f"cycle in {os.path.relpath(crate, root)}: {' <-> '.join(sorted(comp))}")
        print("    " + " -> ".join(path))

for n, p in sorted(long_files, reverse=True):
    print(f"over {max_lines} lines with no `//! Long file:` reason at its top: {p} ({n} lines before tests)")
print(f"{len(crates)} crates: {cycles} module cycles, {len(long_files)} long files without a reason")
sys.exit(1 if cycles or long_files else 0)
