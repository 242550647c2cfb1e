"""The README's layout section names every module and folder of the package, and nothing else."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layout_block():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def named_in_layout():
    """Paths the layout names. Each line is `<indent><names>  <what they hold>`: names are
    separated by one space, the description by two or more, and two spaces of indent are one
    folder level."""
    names, stack = set(), []
    for line in layout_block().splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        entries = re.split(r"\s{2,}", line.strip())[0].split(" ")
        stack = stack[:depth]
        for entry in entries:
            names.add("/".join(stack + [entry.rstrip("/")]))
        if len(entries) == 1 and entries[0].endswith("/"):
            stack.append(entries[0].rstrip("/"))
    return {n for n in names if n.split("/")[0] == "minigemma"}


def in_tree():
    found = set()
    for folder, dirs, files in os.walk(os.path.join(ROOT, "minigemma")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(folder, ROOT)
        found.add(rel)
        found.update(os.path.join(rel, f) for f in files if f.endswith((".py", ".cu", ".cuh", ".h"))
                     and f != "__main__.py" and (f != "__init__.py" or rel == "minigemma"))
    return found


def test_layout_matches_the_tree():
    layout, tree = named_in_layout(), in_tree()
    assert not tree - layout, f"in the package but not in the README's layout: {sorted(tree - layout)}"
    assert not layout - tree, f"in the README's layout but not in the package: {sorted(layout - tree)}"
