"""The user docs hold together: relative links resolve, README stays short, its config parses."""

import re
from pathlib import Path

import pytest
import yaml

from simhelpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "results").glob("*/README.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", path.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_slug_follows_github():
    assert slug("Peer-to-peer consensus optimizers (seed 003)") == "peer-to-peer-consensus-optimizers-seed-003"
    assert slug("Compression: adacomp, topk, random_k") == "compression-adacomp-topk-random_k"
    assert slug("Ako (seed 000's base)") == "ako-seed-000s-base"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_is_short_and_for_users():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"session|commit [0-9a-f]{7}", text, re.I)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_doc_points_at_a_developers_data_folder(doc):
    assert "../shared" not in doc.read_text()


def test_the_readme_config_is_a_valid_config():
    from simbench.experiment.config import parse_config
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
                 if b.startswith("name: quickstart"))
    cfg = parse_config(yaml.safe_load(block))
    assert (cfg.algorithm, cfg.nodes, cfg.scenario.weak_workers.fraction) == ("dsgd", 8, 0.2)
    assert cfg.scenario.crashes[0].recover_at == 5.0


def test_every_algorithm_the_readme_names_is_registered():
    """README's table names algorithms that exist (the full list is `simbench list`, so adding
    an algorithm needs its module and the registry, not a README row)."""
    from simbench.algorithms import ALGORITHMS
    text = (REPO / "README.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| [`")]
    names = {n for line in table for n in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    assert names and names - {"compression"} <= set(ALGORITHMS)
