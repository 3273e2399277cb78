#!/usr/bin/env python3
"""Prints the import graph among src/'s top-level modules (those `src/lib.rs` declares) and
exits 1 if it has a cycle. An edge A -> B is any `crate::B` path (in `use` lists too) in A's
files, test modules (`#[cfg(test)]` to the end of a file) left out. `make deps-graph`."""

import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
modules = re.findall(r"^\s*pub\s+mod\s+(\w+)\s*;", (src / "lib.rs").read_text(), re.M)


def files_of(m):
    single = src / f"{m}.rs"
    return [single] if single.exists() else sorted((src / m).rglob("*.rs"))


def code(path):
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return re.sub(r"//[^\n]*", "", text)


edges = {m: set() for m in modules}
for m in modules:
    for f in files_of(m):
        text = code(f)
        for target in re.findall(r"crate::(\w+)", text):
            if target in edges and target != m:
                edges[m].add(target)
        # use crate::{a::x, b::y}
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            for target in re.findall(r"(?:^|,)\s*(\w+)", group):
                if target in edges and target != m:
                    edges[m].add(target)

for m in sorted(edges):
    print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
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
            sccs.append(sorted(comp))


for v in sorted(edges):
    if v not in index:
        visit(v)
for c in sccs:
    print(f"CYCLE among: {', '.join(c)}")
print(f"{len(modules)} modules, {sum(len(e) for e in edges.values())} edges, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
