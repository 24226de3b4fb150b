"Packaging: the console script, the modules nbdev exports, the notebooks in sync with them."
import importlib, zipfile
from conftest import ROOT, run, BIN

MODULES = ("data", "architecture", "flow", "teachers", "tricks", "optim", "lora", "config", "runs", "train", "eval", "launch",
           "speedrun", "cli")
LAUNCH_CONFIGS = ("1gpu", "8gpu-ddp", "fsdp2-8gpu", "fsdp2-4x8gpu")  # the accelerate configs `prx-nb launch` ships


def test_console_script_and_modules():
    from importlib.metadata import entry_points
    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("prx-nb") == "prx_nb.cli:main"
    for m in MODULES: importlib.import_module(f"prx_nb.{m}")


def test_wheel_contains_every_chapter_module(tmp_path):
    r = run([str(BIN / "python"), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path), str(ROOT)])
    assert "BuildBackendWarning" not in r.stdout + r.stderr, "setuptools warns about the package layout (pyproject.toml)"
    whl = next(tmp_path.glob("prx_nb-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    for m in (*MODULES, "_modidx", "__main__"): assert f"prx_nb/{m}.py" in names
    for c in LAUNCH_CONFIGS: assert f"prx_nb/configs/{c}.yaml" in names


def test_data_card_carries_the_spec():
    card = (ROOT / "data_cards" / "shapes.md").read_text()
    for s in ("(220,40,40)", "max(4, 0.005·S²)", "f > 0.88 square", "(green, triangle)"): assert s in card


def test_version_names_the_libraries():
    out = run([str(BIN / "prx-nb"), "--version"]).stdout
    for name in ("prx-nb", "torch", "diffusers", "transformers", "accelerate", "datasets"): assert name in out
