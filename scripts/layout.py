#!/usr/bin/env python3
"""The shape of ohrun's source: the import graph between files and its cycles, the largest files and the
largest functions. Issue N's gate: no cycle between files, no file over MAX_LINES lines, and no function
over MAX_FN_LINES lines without a comment in the three lines above it saying why.

    python3 scripts/layout.py            # print the report
    python3 scripts/layout.py --check    # the same, and exit 1 when a rule is broken beyond the known debts
                                         # (.ci/run runs this)

The known debts (scripts/layout-debts.txt) are a ratchet: a cycle listed there may shrink or go, never
grow or be joined by another; a file listed there may shrink, never grow past its listed size; a function
listed there likewise. Whatever is not listed must keep the rules. Lines: `cycle FILE FILE…`,
`file PATH LINES`, `fn PATH:NAME LINES`.

An edge A -> B means a path in A (`use crate::x::y`, `crate::x::y::f()`, `super::y`) names an item that
B defines. A path that ends at a folder's mod.rs is followed through that mod.rs's `pub use` re-exports to
the file that defines the item, so a re-export is not a cycle by itself; `mod x;` declarations are not
edges. Files under `#[cfg(test)]` blocks are counted like the rest (tests live beside their code), but
paths inside a `mod tests` block are not edges: a test may look anywhere.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
DEBTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layout-debts.txt")
MAX_LINES = 600
MAX_FN_LINES = 80

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(?:::\{([^}]*)\})?")
FN_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+([A-Za-z0-9_]+)")


def source_files():
    for folder, _, names in os.walk(ROOT):
        for name in sorted(names):
            if name.endswith(".rs"):
                yield os.path.relpath(os.path.join(folder, name), ROOT)


def module_of(rel):
    """src-relative file -> module path (list of names); main.rs and lib.rs are the crate root."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(module):
    """module path -> its file, or None."""
    base = os.path.join(ROOT, *module) if module else None
    if base is None:
        return "lib.rs"
    for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(candidate):
            return os.path.relpath(candidate, ROOT)
    return None


def strip_tests_and_comments(text):
    """The text without `//` comments, string literals' contents and `mod tests { … }` blocks."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"//[^\n]*", "", text)
    out, skip_depth, depth = [], None, 0
    for line in text.split("\n"):
        if skip_depth is None and re.match(r"\s*(?:pub\s+)?mod\s+tests\s*\{", line):
            skip_depth = depth
        depth += line.count("{") - line.count("}")
        if skip_depth is None:
            out.append(line)
        elif depth <= skip_depth:
            skip_depth = None
    return "\n".join(out)


def reexports(rel, text):
    """name -> module path, for a mod.rs/lib.rs's `pub use` of its children's items."""
    found = {}
    here = module_of(rel)
    for match in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
        spec = re.sub(r"\s+", "", match.group(1))
        prefix, _, group = spec.partition("::{")
        names = group.rstrip("}").split(",") if group else [prefix.rsplit("::", 1)[-1]]
        if not group:
            prefix = prefix.rsplit("::", 1)[0]
        segments = prefix.split("::")
        if segments[0] == "crate":
            module = segments[1:]
        elif segments[0] == "self":
            module = here + segments[1:]
        elif segments[0] == "super":
            module = here[:-1] + segments[1:]
        else:
            module = here + segments
        for name in names:
            name = name.split("as")[0] if "as" in name.split("::")[-1] else name
            if name and name != "self" and name != "*":
                found[name.split("::")[-1]] = module + name.split("::")[:-1]
    return found


def target_file(module, name, exports):
    """The file that defines `name` reached through `module` (longest existing file prefix, then re-exports)."""
    for cut in range(len(module), -1, -1):
        path = file_of(module[:cut])
        if path is None:
            continue
        seen = set()
        while path in exports and name in exports[path] and path not in seen:
            seen.add(path)
            nxt = file_of(exports[path][name]) or path
            if nxt == path:
                break
            path = nxt
        return path
    return None


def edges_of(rel, text, exports):
    here = module_of(rel)
    # super:: in a file `a/b.rs` is `a`; in `a/mod.rs` it is the parent of `a`.
    found = set()
    for match in PATH_RE.finditer(text):
        root, tail, group = match.group(1), match.group(2), match.group(3)
        base = [] if root == "crate" else here if root == "self" else here[:-1]
        found |= targets(base, [s for s in tail.split("::") if s], group, exports)
    # A parent's paths into the children it declares (`mod expand;` … `use expand::Combo;` in job/mod.rs)
    # are not edges: a module and the files it declares are one room (it is their facade and they use
    # its shared types); what is checked is the graph between rooms and between siblings.
    found.discard(rel)
    return found


def targets(base, segments, group, exports):
    """The files a path names: `base::segments::name`, or each name of `base::segments::{…}`."""
    names = [n.strip().split(" as ")[0].split("::")[0] for n in group.split(",")] if group else segments[-1:]
    module = base + (segments if group else segments[:-1])
    # A path such as `crate::agent::http::shared_client` names an item; `crate::agent::http` a module.
    whole = file_of(base + segments) if segments else None
    found = set()
    for name in filter(None, (n.strip() for n in names)):
        target = whole if not group and whole is not None else target_file(module, name, exports)
        if name == "self" and group:
            target = file_of(module)
        if target:
            found.add(target)
    return found


def strongly_connected(graph):
    """Tarjan's algorithm, iterative; components of more than one file."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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
                    result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def long_functions(rel, lines):
    """(lines, name, first line, has a why-comment) of every fn, by brace counting."""
    found = []
    for number, line in enumerate(lines):
        match = FN_RE.match(line)
        if not match:
            continue
        depth, started, end = 0, False, number
        for offset in range(number, len(lines)):
            code = re.sub(r'"(?:\\.|[^"\\])*"', '""', re.sub(r"//.*", "", lines[offset]))
            depth += code.count("{") - code.count("}")
            if "{" in code:
                started = True
            if started and depth <= 0:
                end = offset
                break
            if not started and code.rstrip().endswith(";"):
                break
        length = end - number + 1
        # The why is a plain comment (`// …`, not the function's `///` doc) among the lines just above it.
        above = lines[max(0, number - 6) : number]
        why = any(re.match(r"\s*//(?![/!])", line) for line in above)
        found.append((length, match.group(1), number + 1, why))
    return [(n, name, rel, first, why) for n, name, first, why in found]


def main():
    check = "--check" in sys.argv[1:]
    texts = {rel: open(os.path.join(ROOT, rel), encoding="utf-8").read() for rel in source_files()}
    exports = {rel: reexports(rel, strip_tests_and_comments(t)) for rel, t in texts.items()}
    graph = {rel: edges_of(rel, strip_tests_and_comments(t), exports) for rel, t in texts.items()}
    cycles = strongly_connected(graph)

    print(f"# Import graph: {len(graph)} files, {sum(len(v) for v in graph.values())} edges")
    if cycles:
        for component in cycles:
            print(f"cycle ({len(component)} files): " + ", ".join(component))
            for a in component:
                inside = sorted(b for b in graph[a] if b in component)
                print(f"    {a} -> {', '.join(inside)}")
    else:
        print("no cycles")

    sizes = sorted(((t.count("\n"), rel) for rel, t in texts.items()), reverse=True)
    print(f"\n# Largest files (limit {MAX_LINES} lines)")
    for count, rel in sizes[:12]:
        print(f"{count:6}  src/{rel}{'   <-- over' if count > MAX_LINES else ''}")

    functions = sorted(
        (f for rel, t in texts.items() for f in long_functions(rel, t.split("\n"))), reverse=True
    )
    print(f"\n# Largest functions (limit {MAX_FN_LINES} lines without a comment above saying why)")
    for count, name, rel, first, why in functions[:12]:
        flag = "" if count <= MAX_FN_LINES else ("   (commented)" if why else "   <-- over")
        print(f"{count:6}  src/{rel}:{first} {name}{flag}")

    broken = beyond_debts(cycles, sizes, functions, read_debts())
    for line in broken:
        print("over the known debts: " + line)
    if not broken:
        print("\nwithin the known debts (scripts/layout-debts.txt)")
    if check and broken:
        sys.exit(1)


def read_debts():
    cycles, files, fns = [], {}, {}
    if not os.path.exists(DEBTS):
        return cycles, files, fns
    for line in open(DEBTS, encoding="utf-8"):
        words = line.split("#")[0].split()
        if not words:
            continue
        if words[0] == "cycle":
            cycles.append(set(words[1:]))
        elif words[0] == "file":
            files[words[1]] = int(words[2])
        elif words[0] == "fn":
            fns[words[1]] = int(words[2])
    return cycles, files, fns


def beyond_debts(cycles, sizes, functions, debts):
    """What breaks a rule and is not a listed debt (or is worse than listed)."""
    known_cycles, known_files, known_fns = debts
    broken = []
    for component in cycles:
        if not any(set(component) <= known for known in known_cycles):
            broken.append("a cycle between " + ", ".join(component))
    for count, rel in sizes:
        if count > MAX_LINES and count > known_files.get("src/" + rel, MAX_LINES):
            broken.append(f"src/{rel} has {count} lines (limit {MAX_LINES}, listed {known_files.get('src/' + rel, '-')})")
    for count, name, rel, _first, why in functions:
        key = f"src/{rel}:{name}"
        if count > MAX_FN_LINES and not why and count > known_fns.get(key, MAX_FN_LINES):
            broken.append(f"{key} has {count} lines and no comment saying why (limit {MAX_FN_LINES})")
    return broken


if __name__ == "__main__":
    main()
