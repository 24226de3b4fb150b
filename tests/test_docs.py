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
    assert names == [*CHAPTERS, "15_results", "index"]
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
    assert side[2]["contents"] == ["15_results.ipynb"]
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
