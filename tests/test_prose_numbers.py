"""Every number in a chapter's prose is backed where it stands: printed in that notebook's stored outputs, written in
one of its code cells, or quoted from a cited source listed in `prose_number_exceptions.yaml`."""
import json
import re
from pathlib import Path

import yaml

NBS = Path(__file__).parent.parent / "nbs"
EXCEPTIONS = Path(__file__).parent / "prose_number_exceptions.yaml"
# a number in prose: 1,235 or 0.673 or 2.2e14, with an optional unit that scales it (17.3%, 1.22M, 20k, 1.33x); not part of
# a name (H200, bf16, DINOv3, x0, 01_data) or of a dotted version (0.42.1)
PROSE_NUMBER = re.compile(
    r"(?<![\w.\-/#$^])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:e([-+]?\d+))?(%|M|k|x|×)?(?![\w.]*[A-Za-z_\d])"
)
VALUE = re.compile(r"(\d[\d,_]*(?:\.\d+)?(?:[eE][-+]?\d+)?)(M|k)?")
SCALE = {"M": 1e6, "k": 1e3}
CITATION = re.compile(r"(?:et al\.,?|&[^,;)]{1,30}|line|lines|Part)\s*$")  # (Li & He 2025), line 487, Part 2


def prose(source: str) -> str:
    "A markdown cell's text without what is not a claim: fenced code, link targets, URLs, list numbers, headings' ids."
    source = re.sub(r"```.*?```", "", source, flags=re.S)
    source = re.sub(r"\]\([^)]*\)", "]", source)
    source = re.sub(r"https?://\S+", "", source)
    return re.sub(r"(?m)^\s*\d+\.\s", "", source)


def backing_values(nb: dict) -> set[float]:
    "Every number written in the notebook's code cells or printed in their stored outputs."
    texts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        texts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts += ["".join(out.get("text", "")), "".join(data.get("text/plain", "")), "".join(data.get("text/markdown", ""))]
    values = set()
    for m in VALUE.finditer(" ".join(texts)):
        try:
            values.add(float(m.group(1).replace(",", "").replace("_", "")) * SCALE.get(m.group(2), 1))
        except ValueError:
            pass
    return values


def claimed(match) -> list[tuple[float, float]]:
    "The values a prose number may stand for, each with half a unit of its last written digit (what rounding allows)."
    whole, fraction, exponent, unit = match.groups()
    value = float(whole.replace(",", "") + (fraction or ""))
    decimals = len(fraction) - 1 if fraction else 0
    scale = 10.0 ** int(exponent) if exponent else SCALE.get(unit, 1)
    half = 0.5 * 10.0**-decimals * scale * 1.0001
    if unit == "%":
        return [(value, half), (value / 100, half / 100)]  # 17.3% against a printed 17.3% or 0.173
    return [(value * scale, half)]


def is_backed(match, values: set[float]) -> bool:
    "Whether some printed or written value rounds to the prose number."
    return any(abs(v - c) <= half for c, half in claimed(match) for v in values)


def unbacked(path: Path) -> list[tuple[str, str]]:
    "The prose numbers of one notebook that no output, code cell or citation backs: (number, its context)."
    nb = json.loads(path.read_text())
    values, found = backing_values(nb), []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = prose("".join(cell["source"]))
        for m in PROSE_NUMBER.finditer(text):
            if CITATION.search(text[max(0, m.start() - 40) : m.start()]) or is_backed(m, values):
                continue
            found.append((m.group(0), " ".join(text[max(0, m.start() - 50) : m.end() + 30].split())))
    return found


def test_every_prose_number_is_backed():
    exceptions = yaml.safe_load(EXCEPTIONS.read_text())
    problems, used = [], set()
    for path in sorted(NBS.glob("*.ipynb")):
        allowed = exceptions.get(path.name, [])
        for number, context in unbacked(path):
            hits = [i for i, e in enumerate(allowed) if e["number"] == number and e["context"] in context]
            if hits:
                used.add((path.name, hits[0]))
                continue
            problems.append(f"{path.name}: {number!r} in '...{context}...'")
    stale = [f"{nb}: {e['number']!r} ({e['context']!r})" for nb, es in exceptions.items() for i, e in enumerate(es)
             if (nb, i) not in used]
    assert not problems, (
        "numbers in the prose that no stored output or code cell of the same notebook shows: print them in a cell, show"
        " the setting in a code cell, or list them with their citation in tests/prose_number_exceptions.yaml:\n"
        + "\n".join(problems)
    )
    assert not stale, "exceptions that no longer match any prose (remove them):\n" + "\n".join(stale)


def test_every_exception_cites_its_source():
    for nb, entries in yaml.safe_load(EXCEPTIONS.read_text()).items():
        assert (NBS / nb).exists(), nb
        for e in entries:
            assert set(e) == {"number", "context", "source"} and len(e["source"]) > 10, (nb, e)


def test_the_check_catches_a_mismatch(tmp_path):
    "A 4-block claim above an output printing 6 blocks is caught; a rounded, printed figure is not."
    cells = [
        dict(cell_type="markdown", source=["A 4-block denoiser scores 0.673 at 1.22M images (17.3% below t = 0.5)."]),
        dict(cell_type="code", source=["print(depth)"], outputs=[dict(text=["6 blocks 0.67333 1,220,480 images 0.1734"])]),
    ]
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(dict(cells=cells)))
    assert [n for n, _ in unbacked(path)] == ["4", "0.5"]
