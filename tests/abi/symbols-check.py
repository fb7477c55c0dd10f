#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Exported symbols == version script == header declarations.

The three lists of public calls must agree (libinput's symbols-leak-test,
libnvme's test-libnvme-sym):

  * dynamic symbols the built libuffdmove.so defines (nm -D --defined-only),
    each bound to the version node the map lists it under;
  * names under global: in src/libuffdmove.map, sorted, without wildcards;
  * functions declared in include/uffdmove.h.

Every exported name starts with uffdmove_, and the internal static library
defines no global uffdmove_* symbol (internals never use the public
prefix, so the map check above is complete).
"""

import argparse
import re
import subprocess
import sys

import versionscript


def parse_map(path):
    """Return ({name: node}, [problems]) from a GNU ld version script."""
    names, problems = {}, []
    for node, entries in versionscript.nodes(path):
        listed = []
        for scope, stmt in entries:
            if scope != "global":
                if stmt != "*":
                    problems.append(f"{node}: local: should be just '*', "
                                    f"found {stmt!r}")
                continue
            if any(c in stmt for c in "*?["):
                problems.append(f"{node}: wildcard {stmt!r} under global:")
                continue
            if stmt in names:
                problems.append(f"{stmt} listed twice ({names[stmt]}, {node})")
            names[stmt] = node
            listed.append(stmt)
        if listed != sorted(listed):
            problems.append(f"{node}: names under global: are not sorted")
    if not names:
        problems.append(f"{path}: no names under global: found")
    return names, problems


def strip_cplusplus_blocks(text):
    """Drop '#ifdef __cplusplus ... #endif' (the extern "C" braces)."""
    return re.sub(r"^\s*#\s*ifdef\s+__cplusplus\b.*?^\s*#\s*endif[^\n]*",
                  "", text, flags=re.S | re.M)


def parse_header(path):
    """Return the names of the functions the header declares."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = strip_cplusplus_blocks(text)
    text = re.sub(r"\\\n", " ", text)
    text = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)
    # Drop struct/enum/union bodies (innermost first), with their fields'
    # function pointers.
    prev = None
    while prev != text:
        prev = text
        text = re.sub(r"\{[^{}]*\}", " ", text)
    funcs = []
    for stmt in text.split(";"):
        stmt = " ".join(stmt.split())
        m = re.search(r"([A-Za-z_]\w*)\s*\(", stmt)
        if m and not re.search(r"\(\s*\*", stmt[:m.end() + 2]):
            funcs.append(m.group(1))
    return funcs


def parse_nm(nm, lib):
    """Return {name: version or None} of the defined dynamic symbols."""
    out = subprocess.run([nm, "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        kind, sym = fields[-2], fields[-1]
        name, _, version = sym.partition("@")
        version = version.lstrip("@") or None
        if kind == "A" and version in (None, name):
            continue            # a version node itself, e.g. UFFDMOVE_0.1
        syms[name] = version
    return syms


def parse_internal(nm, archive):
    """Return global uffdmove_* symbols the internal static library defines."""
    out = subprocess.run([nm, "--defined-only", archive], check=True,
                         capture_output=True, text=True).stdout
    leaks = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[-2].isupper() and \
                fields[-1].startswith("uffdmove_"):
            leaks.append(fields[-1])
    return sorted(set(leaks))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nm", default="nm")
    ap.add_argument("--lib", required=True, help="built libuffdmove.so")
    ap.add_argument("--map", required=True, help="src/libuffdmove.map")
    ap.add_argument("--header", required=True, help="include/uffdmove.h")
    ap.add_argument("--internal", help="internal static library (.a)")
    args = ap.parse_args()

    problems = []
    mapped, map_problems = parse_map(args.map)
    problems += map_problems
    declared = parse_header(args.header)
    exported = parse_nm(args.nm, args.lib)

    print(f"library exports {len(exported)}, map lists {len(mapped)}, "
          f"header declares {len(declared)}")

    for name in sorted({n for n in declared if declared.count(n) > 1}):
        problems.append(f"{name} declared more than once in the header")
    declared = set(declared)

    def diff(a, a_name, b, b_name, hint):
        for name in sorted(set(a) - set(b)):
            problems.append(f"{name}: {a_name} but not {b_name} ({hint})")

    diff(mapped, "in the map", exported, "exported by the library",
         "not defined yet, or missing UFFDMOVE_EXPORT")
    diff(exported, "exported by the library", mapped, "in the map",
         "a leak: the version script should have made it local")
    diff(declared, "declared in the header", mapped, "in the map",
         "add it to src/libuffdmove.map")
    diff(mapped, "in the map", declared, "declared in the header",
         "declare it in include/uffdmove.h or drop it from the map")

    for name in sorted(exported):
        if not name.startswith("uffdmove_"):
            problems.append(f"{name}: exported without the uffdmove_ prefix")
        version = exported[name]
        if name in mapped and version is not None and version != mapped[name]:
            problems.append(f"{name}: exported as version {version}, "
                            f"the map lists it under {mapped[name]}")
    for name in sorted(declared):
        if not name.startswith("uffdmove_"):
            problems.append(f"{name}: declared in the header without the "
                            f"uffdmove_ prefix")

    if args.internal:
        for name in parse_internal(args.nm, args.internal):
            problems.append(f"{name}: global in the internal library; "
                            "internal names must not use uffdmove_")

    for p in problems:
        print("FAIL:", p)
    if problems:
        print(f"symbols check FAILED: {len(problems)} problem(s)")
        return 1
    print("symbols check passed: " + ", ".join(sorted(exported)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
