#!/usr/bin/env python3
"""Fails when two files of a crate import each other, directly or around a loop.

The rule (docs/testing.md): the folder tree shows the architecture, and no file of a crate
depends on another that depends back on it. A file's dependencies are the modules its
`use crate::...`, `use super::...` and inline `crate::x::` / `super::x::` paths name, outside
comments and `#[cfg(test)]` code. A child using its parent module (`super::State`) is the usual
shape of a Rust module and is not counted; a parent declaring its children is not an import.

    scripts/check_import_cycles.py            every crate under crates/
    scripts/check_import_cycles.py DIR...     those source folders
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")


def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def code_of(path):
    text = open(path, encoding="utf-8").read()
    # Test modules may reach anywhere; comments and docs name things without importing them.
    text = text.split("#[cfg(test)]")[0]
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))


def dependencies(root):
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                files[module_of(root, path)] = path
    modules = set(files)
    edges = {m: set() for m in modules}
    for module, path in files.items():
        for base, rest in PATH.findall(code_of(path)):
            here = [] if base == "crate" else list(module[:-1])
            segments = rest.split("::")[1:]
            while segments and segments[0] == "super":
                here, segments = here[:-1], segments[1:]
            target = here + segments
            # The longest prefix that is a module of this crate.
            for end in range(len(target), -1, -1):
                found = tuple(target[:end])
                if found in modules:
                    break
            else:
                continue
            is_ancestor = len(found) < len(module) and module[: len(found)] == found
            if found != module and not is_ancestor:
                edges[module].add(found)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    roots = sys.argv[1:] or sorted(
        os.path.join(here, "..", "crates", c, "src")
        for c in os.listdir(os.path.join(here, "..", "crates"))
    )
    bad = 0
    for root in roots:
        for component in cycles(dependencies(root)):
            names = sorted("/".join(m) or "lib" for m in component)
            print(f"import cycle in {os.path.normpath(root)}: {' <-> '.join(names)}")
            bad += 1
    if bad:
        sys.exit(1)
    print(f"no import cycles in {len(roots)} crates")


if __name__ == "__main__":
    main()
