#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Every `.rs` file is a node; a path that starts with `crate::`, `super::`,
`self::` or a module declared in the same file (`mod name;`) is an edge to
the deepest module file it names (the file where that module lives). Left
out: re-exports (`pub use child::Item` is a module's facade, not something
it depends on), a module's use of its own parents (`super::Item`,
`crate::Error`: Rust shows a parent's items to its children, and a parent
that holds its children's types is their owner, not their peer), and paths
inside `#[cfg(test)]` modules. A strongly connected component of two files or
more is a cycle.

    scripts/check-module-cycles.py [CRATE_SRC ...]   (default: every crate's src/)

Exit status 1 and one line per cycle (its files, and one path that closes
each edge) when there is one.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["proto", "connectors", "worker", "coordinator", "tests"]


def strip_comments_and_strings(text: str) -> str:
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12])):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            i += len(m.group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(text: str) -> str:
    """Removes `#[cfg(test)] mod x { ... }` bodies."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[:m.start()] + text[i:]


def expand_use_tree(tree: str) -> list[list[str]]:
    """`a::{b, c::{d, e as f}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)

    def parse(s: str, prefix: list[str]) -> list[list[str]]:
        paths = []
        for part in split_top(s):
            if not part:
                continue
            if "{" in part:
                head, _, rest = part.partition("{")
                head_segs = [x for x in head.split("::") if x]
                paths.extend(parse(rest[:-1], prefix + head_segs))
            else:
                segs = [x for x in part.split("::") if x and x != "*"]
                paths.append(prefix + segs)
        return paths

    return parse(tree, [])


def split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def crate_modules(src: Path) -> dict[tuple[str, ...], Path]:
    mods: dict[tuple[str, ...], Path] = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        if parts and parts[0] in ("bin",):
            continue
        mods.setdefault(tuple(parts), f)
    return mods


def check_crate(src: Path) -> list[str]:
    mods = crate_modules(src)
    # A binary's modules (main.rs's `mod cli;`) live beside the library's; both
    # roots map to (), which is fine for cycle finding within each.
    edges: dict[Path, dict[Path, str]] = {f: {} for f in mods.values()}
    for path, f in mods.items():
        text = drop_test_modules(strip_comments_and_strings(f.read_text()))
        declared = set(re.findall(r"\bmod\s+(\w+)\s*;", text))
        here = list(path)
        # The module a bare `super::` starts from is the parent of `here`.
        candidates: list[list[str]] = []
        use_re = r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);"
        for m in re.finditer(use_re, text):
            # A re-export (`pub use child::Item`) is the module's facade, not a
            # dependency of the module on its child.
            if not m.group(1):
                candidates.extend(expand_use_tree(m.group(2)))
        rest_of_text = re.sub(use_re, "", text)
        for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)", rest_of_text):
            candidates.append([m.group(1)] + [s for s in m.group(2).split("::") if s])
        for segs in candidates:
            if not segs:
                continue
            if segs[0] == "crate":
                base, rest = [], segs[1:]
            elif segs[0] in ("super", "self"):
                base = list(here)
                rest = segs
                while rest and rest[0] in ("super", "self"):
                    if rest[0] == "super":
                        base = base[:-1]
                    rest = rest[1:]
            elif segs[0] in declared:
                base, rest = list(here), segs
            else:
                continue
            target = tuple(base)
            for s in rest:
                if tuple(list(target) + [s]) in mods:
                    target = tuple(list(target) + [s])
                else:
                    break
            t = mods.get(target)
            if t is None or t == f:
                continue
            # A module may use what its parents give it (Rust shows a parent's
            # private items to its children): only the edge down or across counts.
            if path[: len(target)] == target:
                continue
            edges[f].setdefault(t, "::".join(segs))
    return [describe(src, comp, edges) for comp in sccs(edges) if len(comp) > 1]


def sccs(edges: dict[Path, dict[Path, str]]) -> list[list[Path]]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: Path) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
            out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def describe(src: Path, comp: list[Path], edges: dict[Path, dict[Path, str]]) -> str:
    names = [str(f.relative_to(ROOT)) for f in comp]
    inside = set(comp)
    lines = [f"cycle of {len(comp)} files: " + ", ".join(names)]
    for f in comp:
        for t, via in sorted(edges[f].items()):
            if t in inside:
                lines.append(f"    {f.relative_to(src)} -> {t.relative_to(src)}  ({via})")
    return "\n".join(lines)


def main() -> int:
    srcs = [Path(a) for a in sys.argv[1:]] or [ROOT / c / "src" for c in CRATES]
    found = []
    for src in srcs:
        found.extend(check_crate(src.resolve()))
    for c in found:
        print(c)
    if found:
        print(f"{len(found)} module cycle(s); move the shared item into a leaf module both can use")
        return 1
    print(f"no module cycles in {len(srcs)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
