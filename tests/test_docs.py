"Docs inputs: README.md is the index notebook; every notebook passes nbdev's processing; chapters in order."
import json
from pathlib import Path
from readme import ROOT, render_readme


def test_readme_matches_index():
    assert (ROOT / "README.md").read_text() == render_readme(), "README.md is stale: run `python tests/readme.py`"


def test_readme_links_resolve_from_the_repository():
    "Every relative link in README.md names a file of the repository, as GitHub and PyPI read it from the root."
    import re
    links = [l.split("#")[0] for l in re.findall(r"\]\(([^)\s]+)\)", render_readme()) if not re.match(r"[a-z]+:|#", l)]
    assert links and not [l for l in links if not (ROOT / l).exists()], [l for l in links if not (ROOT / l).exists()]


def test_every_notebook_processes_for_docs(monkeypatch):
    "nbdev's documentation processors (what the docs build runs on each notebook, exported cells executed) accept every notebook."
    from fastcore.nbio import read_nb
    from nbdev.processors import FilterDefaults
    monkeypatch.chdir(ROOT / "nbs")
    for nb_path in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = read_nb(nb_path); FilterDefaults()(nb)
        assert nb.cells, nb_path


CHAPTERS = {"01_data": "data", "02_architecture": "architecture", "03_flow": "flow", "04_teachers": "teachers",
            "05_tricks": "tricks", "06_optim": "optim", "07_lora": "lora", "08_config": "config", "09_runs": "runs",
            "10_train": "train", "11_eval": "eval", "12_launch": "launch", "13_speedrun": "speedrun",
            "14_cli": "cli"}


def test_chapters_and_modules():
    "One notebook per module in reading order, a results notebook that exports nothing, and the index."
    names = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
    assert names == [*CHAPTERS, "15_results", "16_glossary", "index"]
    for nb, mod in CHAPTERS.items():
        src = "".join("".join(c["source"]) for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"])
        assert f"#| default_exp {mod}" in src
    results = "".join("".join(c["source"]) for c in json.loads((ROOT / "nbs" / "15_results.ipynb").read_text())["cells"])
    assert "default_exp" not in results and "#| export" not in results


def test_docs_site_config():
    "The docs site: Quarto config with nbdev's metadata files, the sidebar in chapter order, styles, and a Pages workflow."
    import yaml
    q = yaml.safe_load((ROOT / "nbs" / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website" and "sidebar.yml" in q["metadata-files"] and q["format"]["html"]["css"] == "styles.css"
    assert (ROOT / "nbs" / "styles.css").exists()
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    chapters = side[1]["contents"]
    assert side[0] == "index.ipynb" and chapters == [f"{nb}.ipynb" for nb in CHAPTERS]
    assert side[2]["contents"] == ["15_results.ipynb"] and side[3]["contents"] == ["16_glossary.ipynb"]
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yaml").read_text())
    assert wf["jobs"]["deploy"]["steps"][0]["uses"].startswith("fastai/workflows/quarto-ghp")


def test_ci_and_release_workflows():
    "The test workflow runs the README's test command on push; the release workflow builds and publishes on a tag."
    import yaml
    test = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yaml").read_text())
    on = test.get("on", test.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "push" in on
    steps = [s.get("run", "") for s in test["jobs"]["test"]["steps"]]
    assert "make test" in (ROOT / "README.md").read_text() and any("make test" in s for s in steps)
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yaml").read_text())
    on = release.get("on", release.get(True))
    assert "tags" in on["push"]
    text = yaml.safe_dump(release)
    assert "python -m build" in text and "pypa/gh-action-pypi-publish" in text


NOT_CHAPTERS = ("16_glossary",)  # a reference page: prose only


def _figures(nb: dict) -> list[bytes]:
    import base64
    return [base64.b64decode("".join(o["data"]["image/png"])) for c in nb["cells"] for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def test_notebooks_stay_small_and_every_chapter_stores_a_figure():
    "No notebook over 400 KB, no stored figure over 80 KB, no stored widget state; the index and each chapter store a figure."
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert path.stat().st_size <= 400 * 1024, f"{path.name} is {path.stat().st_size // 1024} KB"
        assert "widgets" not in nb.get("metadata", {}), f"{path.name} stores widget state"
        figures = _figures(nb)
        assert all(len(f) <= 80 * 1024 for f in figures), f"{path.name}: a figure over 80 KB (lower its dpi)"
        assert figures or path.stem in NOT_CHAPTERS, f"{path.name} stores no figure"


def test_exported_code_keeps_the_style():
    "Exported lines of at most 120 characters (nbdev's generated __all__ aside) and functions of at most 60 lines."
    import ast
    for path in sorted((ROOT / "prx_nb").glob("*.py")):
        if path.name == "_modidx.py":
            continue
        text = path.read_text()
        long = [i + 1 for i, line in enumerate(text.splitlines()) if len(line) > 120 and not line.startswith("__all__")]
        assert not long, f"{path.name}: lines {long} are over 120 characters"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name} is over 60 lines"
