#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every exported call has a man page, and uffdmove.7 exists.

For each name under global: in src/libuffdmove.map, man/<name>.3 must exist:
either a full page whose NAME section mentions the name, or a one-line
'.so man3/<page>.3' alias to such a page (one .3 per call, variants as
.so aliases). When the build installs man pages (-Dman=true),
each of them must also be among the files `meson install` installs.
"""

import argparse
import json
import os
import re
import sys

import versionscript


def map_names(path):
    """Every name under global:, as listed (symbols-check judges the list)."""
    return [name for _, entries in versionscript.nodes(path)
            for scope, name in entries if scope == "global"]


def so_target(text):
    """The page a '.so' alias points to, or None for a full page."""
    lines = [l for l in text.splitlines()
             if l.strip() and not l.startswith(('.\\"', "'\\\""))]
    if len(lines) == 1:
        m = re.match(r"\.so\s+(\S+)", lines[0])
        if m:
            return os.path.basename(m.group(1))
    return None


def name_section(text):
    m = re.search(r"^\.SH\s+\"?NAME\"?\s*$(.*?)^\.SH", text,
                  flags=re.S | re.M)
    if not m:
        return ""
    return re.sub(r"\\f[BIRP]|\\f\(..|\\&", "", m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--mandir", required=True)
    ap.add_argument("--installed", help="meson-info/intro-installed.json")
    ap.add_argument("--man-option", default="true",
                    help="value of -Dman (false: skip the install check)")
    args = ap.parse_args()

    problems = []
    names = map_names(args.map)
    pages = [os.path.join(args.mandir, "uffdmove.7")]
    if not os.path.isfile(pages[0]):
        problems.append("man/uffdmove.7 is missing (concepts, error "
                        "vocabulary, kernel requirements)")

    for name in names:
        page = os.path.join(args.mandir, name + ".3")
        if not os.path.isfile(page):
            problems.append(f"{name}: man/{name}.3 is missing "
                            "(a page, or a '.so man3/<page>.3' alias)")
            continue
        pages.append(page)
        text = open(page, encoding="utf-8", errors="replace").read()
        target = so_target(text)
        if target:
            tpath = os.path.join(args.mandir, target)
            if not os.path.isfile(tpath):
                problems.append(f"{name}: man/{name}.3 is an alias to "
                                f"{target}, which does not exist")
                continue
            text = open(tpath, encoding="utf-8", errors="replace").read()
            if so_target(text):
                problems.append(f"{name}: alias target {target} is itself "
                                "an alias")
                continue
            where = target
        else:
            where = name + ".3"
        if not re.search(r"\b%s\b" % re.escape(name), name_section(text)):
            problems.append(f"{name}: the NAME section of man/{where} does "
                            "not mention it (whatis/apropos use it)")

    known = {n + ".3" for n in names}
    if os.path.isdir(args.mandir):
        for f in sorted(os.listdir(args.mandir)):
            if f.endswith(".3") and f not in known:
                print(f"note: man/{f} documents no exported call")

    if args.man_option == "true" and args.installed and \
            os.path.isfile(args.installed):
        with open(args.installed, encoding="utf-8") as f:
            dests = set(json.load(f).values())
        for page in pages:
            if not os.path.isfile(page):
                continue
            base = os.path.basename(page)
            section = "man" + base.rsplit(".", 1)[1]
            if not any(d.endswith(f"/{section}/{base}") for d in dests):
                problems.append(f"man/{base} is not installed (install it "
                                f"to share/man/{section} in man/meson.build)")

    present = sum(os.path.isfile(p) for p in pages)
    print(f"{len(names)} exported calls; {present} of the {len(names) + 1} "
          "man pages they need (with uffdmove.7) are present")
    for p in problems:
        print("FAIL:", p)
    if problems:
        print(f"man coverage check FAILED: {len(problems)} problem(s)")
        return 1
    print("man coverage check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
