import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args, check=True, **kw):
    "Run a command with the test interpreter's environment, offline."
    env = dict(kw.pop("env", os.environ), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run(args, capture_output=True, text=True, env=env, **kw)
    if check and r.returncode != 0: raise AssertionError(f"{args} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    "One data cache for the session (the train chapter): the runs of one data setting prepare it once, not each run."
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # pytest -n: the workers share one (its lock)
    (root / "data-cache").mkdir(exist_ok=True)
    os.environ["PRX_NB_DATA_CACHE"] = str(root / "data-cache")
    yield
    os.environ.pop("PRX_NB_DATA_CACHE", None)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    "A run directory trained by `prx-nb train --preset shapes-tiny`."
    out = tmp_path_factory.mktemp("tiny")
    run([str(BIN / "prx-nb"), "train", "--preset", "shapes-tiny", "--out", str(out)])
    return out
