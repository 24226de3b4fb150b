"""Render nbs/index.ipynb to README.md without Quarto (nbdev-readme needs Quarto, which is not installable offline).
`python tests/readme.py` rewrites README.md; tests/test_docs.py checks that README.md equals this rendering."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render_readme(nb_path=ROOT / "nbs" / "index.ipynb") -> str:
    "Markdown of the index notebook: title and summary from its first cell, then every markdown and visible code cell."
    cells = json.loads(Path(nb_path).read_text())["cells"]
    out = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or re.match(r"#\s*\|\s*(hide|exporti?)\b", src): continue
        if c["cell_type"] == "markdown": out.append(src)
        elif c["cell_type"] == "code":
            out.append(f"```python\n{src}\n```")
            printed = "".join("".join(o.get("text", "")) for o in c.get("outputs", []) if o.get("name") == "stdout")
            if printed.strip(): out.append(f"```\n{printed.rstrip()}\n```")  # what the cell printed, as the docs show it
    return _repo_links("\n\n".join(out) + "\n")


def _repo_links(markdown: str) -> str:
    "Links as the docs site writes them (`01_data.ipynb` beside the index, `../bench/...` above it), made to resolve from the root."
    markdown = re.sub(r"\]\(\.\./", "](", markdown)
    return re.sub(r"\]\((\d\d_[\w-]+\.ipynb)([#)])", r"](nbs/\1\2", markdown)


if __name__ == "__main__":
    (ROOT / "README.md").write_text(render_readme()); print("README.md written", file=sys.stderr)
