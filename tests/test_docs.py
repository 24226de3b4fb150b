"Docs inputs: README.md is the index notebook; every notebook passes nbdev's processing; chapters in order."
import json
from pathlib import Path
from readme import ROOT, render_readme


def test_readme_matches_index():
    assert (ROOT / "README.md").read_text() == render_readme(), "README.md is stale: run `python tests/readme.py`"


def test_every_notebook_processes_for_docs(monkeypatch):
    "nbdev's documentation processors (what the docs build runs on each notebook, exported cells executed) accept every notebook."
    from fastcore.nbio import read_nb
    from nbdev.processors import FilterDefaults
    monkeypatch.chdir(ROOT / "nbs")
    for nb_path in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = read_nb(nb_path); FilterDefaults()(nb)
        assert nb.cells, nb_path


def test_chapters_and_modules():
    names = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
    assert names == ["01_data", "02_architecture", "03_tricks", "04_speedrun", "05_eval", "index"]
    for nb, mod in [("01_data", "data"), ("02_architecture", "architecture"), ("03_tricks", "tricks"), ("04_speedrun", "speedrun"), ("05_eval", "eval")]:
        src = "".join("".join(c["source"]) for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"])
        assert f"#| default_exp {mod}" in src


def test_docs_site_config():
    "The docs site: Quarto config with nbdev's metadata files, the sidebar in chapter order, styles, and a Pages workflow."
    import yaml
    q = yaml.safe_load((ROOT / "nbs" / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website" and "sidebar.yml" in q["metadata-files"] and q["format"]["html"]["css"] == "styles.css"
    assert (ROOT / "nbs" / "styles.css").exists()
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    chapters = side[1]["contents"]
    assert side[0] == "index.ipynb" and chapters == sorted(p.name for p in (ROOT / "nbs").glob("0*.ipynb"))
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yaml").read_text())
    assert wf["jobs"]["deploy"]["steps"][0]["uses"].startswith("fastai/workflows/quarto-ghp")
