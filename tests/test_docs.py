"""The project's notes: every citation `docs/<file>.md#<anchor>` in the package, the tests, the
notebooks and the README names an existing page and one of its headings; links between the pages
resolve too; and nothing in the package cites a document outside the repository.

Anchors are GitHub's heading slugs: "## Tanh GELU" -> #tanh-gelu (lowercase, punctuation dropped,
spaces to hyphens, "-1", "-2", ... appended to repeated headings).
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

CITATION = re.compile(r"docs/([a-z_]+)\.md#([a-z0-9-]+)")
# A relative link inside a page: [text](other.md#anchor) or [text](#anchor).
DOC_LINK = re.compile(r"\]\(((?:[A-Za-z0-9_]+\.md)?)#([^)\s]+)\)")
# Citations of material that is not part of the repository (the developers' reference).
OUTSIDE = re.compile(r"\bspec\s*§|spec/ARCHITECTURES|\bpitfalls?\s+#?\d+", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(title):
    """GitHub's anchor for a heading's text: "Q4_K blocks (GGUF)" -> "q4_k-blocks-gguf"."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link counts by its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page):
    """The set of heading anchors of a Markdown page (headings inside code fences skipped)."""
    found, seen, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def citing_files():
    files = sorted((ROOT / "minigemma").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    files += sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "README.md"]
    return [f for f in files if f.is_file() and "__pycache__" not in f.parts]


def citations():
    """[(where, page, anchor)] for every `docs/<page>.md#<anchor>` in the citing files."""
    found = []
    for path in citing_files():
        text = path.read_text(encoding="utf-8")
        for m in CITATION.finditer(text):
            where = f"{path.relative_to(ROOT)}:{line_of(text, m.start())}"
            found.append((where, m.group(1) + ".md", m.group(2)))
    return found


def doc_links():
    """[(where, page, anchor)] for every relative anchor link inside docs/*.md."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for m in DOC_LINK.finditer(text):
            where = f"{page.relative_to(ROOT)}:{line_of(text, m.start())}"
            found.append((where, m.group(1) or page.name, m.group(2)))
    return found


CITATIONS = citations()
DOC_LINKS = doc_links()


def test_the_code_cites_the_docs():
    assert CITATIONS, "no docs/<file>.md#<anchor> citations found: is the scan looking in the right place?"


@pytest.mark.parametrize("where, page, anchor", CITATIONS + DOC_LINKS,
                         ids=[f"{w}->{p}#{a}" for w, p, a in CITATIONS + DOC_LINKS])
def test_citation_resolves(where, page, anchor):
    path = DOCS / page
    assert path.is_file(), f"{where} cites docs/{page}, which does not exist"
    have = anchors(path)
    assert anchor in have, (f"{where} cites docs/{page}#{anchor}, but docs/{page} has no heading "
                            f"with that anchor; its anchors: {sorted(have)}")


def test_slug_follows_github():
    assert slug("Tanh GELU") == "tanh-gelu"
    assert slug("RMSNorm in float32") == "rmsnorm-in-float32"
    assert slug("RG-LRU") == "rg-lru"
    assert slug("Soft-cap before mask") == "soft-cap-before-mask"
    assert slug("Q4_K blocks (GGUF)") == "q4_k-blocks-gguf"
    assert slug("`attention`: GQA, masks") == "attention-gqa-masks"


def test_outside_citations_are_recognised():
    for cited in ("(spec §5.7)", "spec\n§8.1", "spec/ARCHITECTURES.md", "pitfall 22", "Pitfalls #3"):
        assert OUTSIDE.search(cited), cited
    for fine in ("Gemma report §2", "Griffin, De et al. 2024, §2.4", "docs/numerics.md#bos"):
        assert not OUTSIDE.search(fine), fine


def test_package_cites_nothing_outside_the_repository():
    offenders = []
    for path in sorted((ROOT / "minigemma").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data
        for m in OUTSIDE.finditer(text):
            snippet = " ".join(m.group(0).split())
            offenders.append(f"{path.relative_to(ROOT)}:{line_of(text, m.start())}: {snippet!r}")
    assert not offenders, ("the package cites a document outside the repository; cite "
                           "docs/<file>.md#<anchor> or a public source instead:\n  "
                           + "\n  ".join(offenders))
