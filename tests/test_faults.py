"""Faults made to happen for real: each test runs a training in a subprocess with its own timeout, injects one fault
(a folder of another run, a non-finite gradient, a tiny dataset, a damaged checkpoint, a signal at a chosen step, a torn
log line, a missing download offline, a bad value) and checks how the run ends: it continues correctly, it stops with one
line naming the problem and the fix, or it resumes from the last good state. The policy table is in the train chapter."""
import contextlib, json, math, os, signal, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch

TIMEOUT = 300  # seconds: a run that hangs fails its test instead of the suite
TINY = ["--preset", "shapes-tiny", "train.mixed_precision=no", "eval.every=0"]

# Runs `prx-nb ARGV` with faults injected into the denoiser and the checkpoint writer (spec as JSON in PRX_NB_FAULTS):
# nan_loss / inf_grad: training forwards (1-based) whose output / gradient is made non-finite; sigterm: the forward
# during which the process signals itself; raise: the forward that raises; saves: a file listing every checkpoint saved;
# undeletable: a folder name that cannot be removed; network: a file listing every connection attempted (all refused).
INJECT = textwrap.dedent('''
    import importlib, json, os, signal, sys
    spec = json.loads(os.environ["PRX_NB_FAULTS"])
    try: loop = importlib.import_module("prx_nb.train")  # where the loop looks its helpers up
    except ImportError: loop = importlib.import_module("prx_nb.speedrun")
    make_denoiser, save_checkpoint = loop.make_denoiser, loop.save_checkpoint
    def faulty(*args, **kwargs):
        model, calls = make_denoiser(*args, **kwargs), [0]
        def forward_hook(module, inputs, out):
            if not module.training: return out
            calls[0] += 1
            if calls[0] == spec.get("sigterm"): os.kill(os.getpid(), signal.SIGTERM)
            if calls[0] == spec.get("raise"): raise RuntimeError("injected")
            if calls[0] in spec.get("nan_loss", []): out.sample = out.sample * float("nan")
            return out
        model.register_forward_hook(forward_hook)
        first = next(model.parameters())
        first.register_hook(lambda g: g * float("inf") if calls[0] in spec.get("inf_grad", []) else g)
        return model
    def counted(accelerator, out, step, *args, **kwargs):
        with open(spec["saves"], "a") as f: f.write(f"{step}\\n")
        return save_checkpoint(accelerator, out, step, *args, **kwargs)
    loop.make_denoiser = faulty
    if spec.get("undeletable"):  # a folder whose name contains this cannot be removed (as on a read-only mount)
        rmdir = os.rmdir
        def refuse(path, *args, **kwargs):
            if spec["undeletable"] in str(path): raise PermissionError(13, "Permission denied", str(path))
            return rmdir(path, *args, **kwargs)
        os.rmdir = refuse
    if spec.get("network"):  # every attempt to open a connection is written down, then refused
        import socket
        def refuse(address, *args, **kwargs):
            with open(spec["network"], "a") as f: f.write(f"{address}\\n")
            raise OSError("network blocked by the test")
        socket.getaddrinfo, socket.create_connection = refuse, refuse
        socket.socket.connect = lambda self, address: refuse(address)
    if spec.get("saves"): loop.save_checkpoint = counted
    try: main = importlib.import_module("prx_nb.cli").main
    except ImportError: main = importlib.import_module("prx_nb.speedrun").main
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when the suite runs in the background
    try: rc = main(sys.argv[1:])
    except RuntimeError as e:
        print(f"raised: {e}; SIGINT handler restored: {signal.getsignal(signal.SIGINT) is before}")
        rc = 1
    sys.exit(rc)
''')


def prx(*args, faults:dict|None=None, env:dict|None=None, timeout:int=TIMEOUT, tmp:Path|None=None):
    "Run `python -m prx_nb ARGS` (with `faults` injected) in its own process group; a hang is killed and fails."
    args = [str(a) for a in args]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]  # section.key=value, all at the end for argparse
    args = [a for a in args if a not in overrides] + overrides
    cmd = [sys.executable, "-m", "prx_nb", *args]
    extra = dict(env or {})
    if faults is not None:
        script = Path(tmp) / "inject.py"
        script.write_text(INJECT)
        cmd = [sys.executable, str(script), *args]
        extra["PRX_NB_FAULTS"] = json.dumps(faults)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                 "TOKENIZERS_PARALLELISM": "false", **extra})
    try: out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{args} hung for {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def records(out:Path)->list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip().endswith("}")]


def weights(out:Path)->dict:
    from safetensors.torch import load_file
    return load_file(str(out / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_fresh_run_into_another_runs_folder_refuses(tmp_path):
    out = tmp_path / "run"
    assert prx("train", *TINY, "--out", out, "--max-steps", 24, "--checkpoint-every", 8).returncode == 0
    r = prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4)
    assert r.returncode == 2 and "--resume latest" in r.stderr and "--overwrite" in r.stderr, r.stderr[-800:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-16", "step-24"]  # nothing was touched
    r = prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4, "--overwrite")
    assert r.returncode == 0, r.stderr[-800:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]  # only the new run's
    assert json.loads((out / "run.json").read_text())["config"]["train"]["max_steps"] == 8


def test_resume_with_another_recipe_refuses(tmp_path):
    out = tmp_path / "run"
    assert prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4).returncode == 0
    r = prx("train", *TINY, "--out", out, "--max-steps", 12, "--resume", "latest", "train.lr=0.01")
    assert r.returncode == 2 and "train.lr" in r.stderr, r.stderr[-800:]
    r = prx("train", *TINY, "--out", out, "--max-steps", 12, "--resume", "latest")  # a longer budget is the same run
    assert r.returncode == 0 and json.loads(r.stdout[r.stdout.index("{"):])["steps"] == 12, r.stderr[-800:]


def test_resume_without_a_checkpoint_says_so(tmp_path):
    r = prx("train", *TINY, "--out", tmp_path / "a", "--max-steps", 4, "--resume", "latest")
    assert r.returncode == 0 and "no checkpoint" in r.stderr, r.stderr[-800:]
    r = prx("train", *TINY, "--out", tmp_path / "b", "--max-steps", 4, "--resume", "3")
    assert r.returncode == 2 and "step-3" in r.stderr, r.stderr[-800:]


def test_non_finite_gradients_skip_the_whole_step(tmp_path):
    "An inf gradient with a finite loss: the step is dropped and logged with its norm; the weights stay finite."
    out = tmp_path / "run"
    r = prx("train", *TINY, "--out", out, "--max-steps", 10, "train.log_every=1", faults=dict(inf_grad=[3, 4]), tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert all(torch.isfinite(w).all() for w in weights(out).values())
    skips = [r for r in records(out) if r.get("event") == "skip"]
    assert len(skips) == 2 and all(s["what"] == "gradient" and not math.isfinite(s["grad_norm"]) for s in skips), skips
    assert all("grad_norm" in r for r in records(out) if "loss" in r and "event" not in r)


def test_intermittent_bad_steps_stop_the_run(tmp_path):
    "Every other loss NaN: no streak, but the window of recent batches stops the run with what to change."
    out = tmp_path / "run"
    bad = list(range(2, 200, 2))
    r = prx("train", *TINY, "--out", out, "--max-steps", 60, "train.max_bad_steps=3", faults=dict(nan_loss=bad), tmp=tmp_path)
    assert r.returncode == 2 and "non-finite" in r.stderr and "train.lr" in r.stderr, (r.returncode, r.stderr[-800:])
    assert sum(e.get("event") == "skip" for e in records(out)) == 3 and not (out / "pipeline").exists()


def test_dataset_smaller_than_one_batch_stops(tmp_path):
    r = prx("train", *TINY, "--out", tmp_path / "run", "--max-steps", 5, "data.n=8", timeout=180)
    assert r.returncode == 2 and "train.batch_size" in r.stderr and "8 rows" in r.stderr, r.stderr[-800:]


def test_damaged_checkpoint_falls_back_to_the_one_before(tmp_path):
    out = tmp_path / "run"
    assert prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4, "train.log_every=1").returncode == 0
    model = out / "checkpoints" / "step-8" / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated, as a full disk leaves it
    r = prx("train", *TINY, "--out", out, "--max-steps", 12, "--checkpoint-every", 4, "train.log_every=1", "--resume", "latest")
    assert r.returncode == 0 and "step-8 is damaged" in r.stderr, r.stderr[-800:]
    starts = [e for e in records(out) if e.get("event") == "start"]
    assert starts[-1]["step"] == 4 and json.loads(r.stdout[r.stdout.index("{"):])["steps"] == 12
    # no sample lost or repeated: steps 5..12 after the fallback are those of a run never interrupted (16 rows an epoch)
    assert prx("train", *TINY, "--out", tmp_path / "whole", "--max-steps", 12, "--checkpoint-every", 4, "train.log_every=1").returncode == 0
    resumed = {e["step"]: e["loss"] for e in records(out)[records(out).index(starts[-1]):] if "loss" in e and "event" not in e}
    whole = {e["step"]: e["loss"] for e in records(tmp_path / "whole") if "loss" in e and "event" not in e}
    assert sorted(resumed) == list(range(5, 13)), sorted(resumed)
    torch.testing.assert_close(torch.tensor([resumed[s] for s in range(5, 13)]), torch.tensor([whole[s] for s in range(5, 13)]),
                               rtol=1e-5, atol=1e-6)


def test_sigterm_on_a_checkpoint_step_saves_once_and_exits_3(tmp_path):
    out, saves = tmp_path / "run", tmp_path / "saves.txt"
    r = prx("train", *TINY, "--out", out, "--max-steps", 20, "--checkpoint-every", 4, faults=dict(sigterm=4, saves=str(saves)),
            tmp=tmp_path)
    assert r.returncode == 3, (r.returncode, r.stderr[-800:])
    assert saves.read_text().split() == ["4"] and not (out / "pipeline").exists()
    r = prx("speedrun", *TINY, "--out", out, "--overwrite", faults=dict(sigterm=2), tmp=tmp_path)
    assert r.returncode == 3 and not (out / "metrics.json").exists(), r.stderr[-800:]  # nothing judged


def test_signal_handlers_come_back_after_an_exception(tmp_path):
    r = prx("train", *TINY, "--out", tmp_path / "run", "--max-steps", 8, faults={"raise": 3}, tmp=tmp_path)
    assert "SIGINT handler restored: True" in r.stdout, r.stdout[-500:] + r.stderr[-500:]


def test_a_torn_log_line_spoils_only_itself(tmp_path):
    out = tmp_path / "run"
    assert prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4).returncode == 0
    with open(out / "metrics.jsonl", "a") as f: f.write('{"step": 9, "lo')  # killed mid-write
    assert prx("train", *TINY, "--out", out, "--max-steps", 12, "--resume", "latest").returncode == 0
    from prx_nb.eval import read_log
    log = read_log(out)
    assert log[-1]["event"] == "end" and log[-1]["steps"] == 12


def test_offline_lpips_names_the_missing_file(tmp_path):
    net = tmp_path / "connections.txt"
    r = prx("train", *TINY, "--out", tmp_path / "run", "--max-steps", 2, "tricks.lpips=0.1",
            env=dict(TORCH_HOME=str(tmp_path / "empty-hub")), faults=dict(network=str(net)), tmp=tmp_path, timeout=180)
    assert r.returncode == 2 and "vgg16-397923af.pth" in r.stderr and "HF_HUB_OFFLINE" in r.stderr, r.stderr[-800:]
    assert not net.exists(), f"a download was tried offline: {net.read_text()}"


@pytest.mark.parametrize("overrides", [["train.log_every=0"], ["train.ema_every=0"], ["data.size=36"],
                                       ["data.size=36", "data.source=./photos", "model.patch_size=8"],
                                       ["data.proportions={single: 1.0, count: 0.5}"]])
def test_bad_values_stop_before_any_work(tmp_path, overrides):
    out = tmp_path / "run"
    r = prx("train", *TINY, "--out", out, "--max-steps", 2, *overrides, timeout=120)
    key = overrides[0].split("=")[0]
    assert r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-800:]
    assert not (out / "data").exists()  # nothing was built or prepared


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    "The EMA is read with weights_only=True: a pickle that runs code on load is skipped like damage, and nothing runs."
    out, marker = tmp_path / "run", tmp_path / "pwned"
    assert prx("train", *TINY, "--out", out, "--max-steps", 8, "--checkpoint-every", 4).returncode == 0
    newest = out / "checkpoints" / "step-8"
    evil = textwrap.dedent(f'''
        import pathlib, torch
        class Payload:
            def __reduce__(self): return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))
        state = torch.load({str(newest / "ema.pt")!r}, weights_only=True)
        state["payload"] = Payload()
        torch.save(state, {str(newest / "ema.pt")!r})
    ''')
    subprocess.run([sys.executable, "-c", evil], check=True)
    manifest = newest / "manifest.json"
    if manifest.exists():  # the file is consistent with its manifest: only loading it can tell
        import zlib
        m = json.loads(manifest.read_text())
        data = (newest / "ema.pt").read_bytes()
        m["ema.pt"] = dict(size=len(data), crc32=zlib.crc32(data))
        manifest.write_text(json.dumps(m))
    r = prx("train", *TINY, "--out", out, "--max-steps", 12, "--checkpoint-every", 4, "--resume", "latest")
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert r.returncode == 0 and "step-8 is damaged" in r.stderr, r.stderr[-800:]


def test_a_failed_delete_is_reported(tmp_path):
    "Pruning an old checkpoint that cannot be removed: the run goes on and says which folder is left behind."
    out = tmp_path / "run"
    r = prx("train", *TINY, "--out", out, "--max-steps", 12, "--checkpoint-every", 4, "train.keep_checkpoints=1",
            faults=dict(undeletable="step-4"), tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert "could not delete" in r.stderr and "step-4" in r.stderr, r.stderr[-800:]


def test_small_aspect_buckets_are_named(tmp_path):
    "A bucket with fewer rows than a batch cannot fill one: the run names it and its rows instead of dropping it silently."
    import datasets, io
    from PIL import Image
    def png(wh):
        b = io.BytesIO(); Image.new("RGB", wh, "red").save(b, format="PNG"); return b.getvalue()
    sizes = [(64, 32)] * 8 + [(48, 48)] * 8 + [(32, 64)] * 3
    ds = datasets.Dataset.from_list([dict(image={"bytes": png(wh), "path": f"{i}.png"}, prompt=f"picture {i}")
                                     for i, wh in enumerate(sizes)],
                                    features=datasets.Features(image=datasets.Image(), prompt=datasets.Value("string")))
    (tmp_path / "src").mkdir(); ds.to_parquet(str(tmp_path / "src" / "part-0.parquet"))
    r = prx("train", *TINY, "--out", tmp_path / "run", "--max-steps", 2, f"data.source={tmp_path / 'src'}",
            "data.caption_columns={prompt: 1.0}", "data.buckets=[0.5, 1.0, 2.0]", "train.batch_size=4")
    assert r.returncode == 0, r.stderr[-800:]
    named = [l for l in r.stderr.splitlines() if "3 rows" in l]
    assert named and "batch_size=4" in named[0] and "16 rows" not in r.stderr, r.stderr[-800:]


FINISHER = textwrap.dedent('''
    import sys
    from prx_nb.data import finish_shards
    for _ in range(int(sys.argv[2])): assert finish_shards(sys.argv[1], 3, dict(key="k"))["n"] == 30
''')


def test_two_runs_preparing_one_shared_dataset_at_once(tmp_path):
    "Two runs start together on the same data in one data cache: one prepares while the other waits on the lock."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PRX_NB_DATA_CACHE": str(tmp_path / "cache")}
    cmd = lambda name: [sys.executable, "-m", "prx_nb", "train", *TINY[:2], "--out", str(tmp_path / name), "--max-steps", "1",
                        *TINY[2:], "data.n=48"]  # key=value overrides last
    logs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in "ab"}  # files: a full pipe would block
    with contextlib.ExitStack() as files:  # the log files close when both runs are done
        opened = {name: [files.enter_context(path.open("w")) for path in logs[name]] for name in "ab"}
        runs = {name: subprocess.Popen(cmd(name), stdout=opened[name][0], stderr=opened[name][1], env=env) for name in "ab"}
        codes = {name: p.wait(timeout=TIMEOUT) for name, p in runs.items()}
    results = [(codes[name], logs[name][0].read_text(), logs[name][1].read_text()) for name in "ab"]
    assert all(code == 0 for code, _, _ in results), [err[-1500:] for _, _, err in results]
    said = sorted(line.split(", ")[-1] for _, out, _ in results for line in out.splitlines() if "data: " in line)
    assert len(said) == 2 and said[0].startswith("prepared in") and said[1] == "ready", said  # one prepared, one waited
    a, b = (tmp_path / name / "data" for name in "ab")
    assert a.resolve() == b.resolve() and [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [a.resolve().name]
    info = json.loads((a / "prepared" / "prepared.json").read_text())
    assert info["n"] == 48 and not [p for p in a.resolve().rglob(".*") if p.name != ".lock"]  # no temporary left behind


def test_workers_finishing_shards_together_never_collide(tmp_path):
    "Every worker that sees the last shard done writes the index: four at once, many times, and none fails."
    out = tmp_path / "prepared"
    for s in range(3):
        d = out / f"shard-{s:05d}"; d.mkdir(parents=True)
        (d / "prepared.json").write_text(json.dumps(dict(n=10, size=8, captions=2, text_tokens=4, text_dim=8, image_column="image",
                                                         format=2, image_bytes=100.0, text_bytes=32.0,
                                                         caption_columns={"caption": 1.0}, bad=dict(by_reason={}, examples={}), key="k")))
    workers = [subprocess.Popen([sys.executable, "-c", FINISHER, str(out), "300"], stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    errors = [w.communicate(timeout=TIMEOUT)[1] for w in workers]
    assert all(w.returncode == 0 for w in workers), [e[-300:] for e in errors if e]
    assert json.loads((out / "prepared.json").read_text())["n"] == 30 and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_ablate_offline_contacts_no_network_unless_a_run_needs_lpips(tmp_path):
    "Offline, an ablation whose runs do not use LPIPS never probes its weights (a download attempt is a network contact)."
    net = tmp_path / "connections.txt"
    r = prx("ablate", "--preset", "shapes-tiny", "--out", tmp_path / "abl", "--minutes", 0.02, "--runs", "baseline",
            "train.mixed_precision=no", faults=dict(network=str(net)), env=dict(TORCH_HOME=str(tmp_path / "empty-hub")),
            tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert not net.exists(), net.read_text()


def test_sigterm_under_torchrun_on_a_checkpoint_step(tmp_path):
    """A scheduler signals every rank during step 4, a checkpoint step: each rank saves once, the ranks stop together, and
    torchrun reports the workers' interrupted status (3), not success; the run then resumes from step 4."""
    out, saves, script = tmp_path / "run", tmp_path / "saves.txt", tmp_path / "inject.py"
    script.write_text(INJECT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PRX_NB_FAULTS": json.dumps(dict(sigterm=4, saves=str(saves)))}
    args = ["train", *TINY[:2], "--out", str(out), "--checkpoint-every", "4", "--max-steps", "8", *TINY[2:], "train.batch_size=8"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try: _, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate(); pytest.fail("the interrupted two-process run hung")
    assert p.returncode != 0 and "exitcode  : 3" in err, (p.returncode, err[-1500:])
    assert saves.read_text().split() == ["4", "4"], saves.read_text()  # one save, in which every rank takes part
    stopped = [e for e in records(out) if e.get("event") == "interrupted"]
    assert [(e["step"], e["signal"]) for e in stopped] == [(4, signal.SIGTERM)] and not (out / "pipeline").exists()
    env.pop("PRX_NB_FAULTS")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "prx_nb", *args,
                        "--resume", "latest"], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert r.returncode == 0 and [e["step"] for e in records(out) if e.get("event") == "start"][-1] == 4, r.stderr[-1500:]
    assert (out / "pipeline").exists()


def test_two_runs_in_one_process_may_differ_in_precision(tmp_path):
    "A notebook trains twice in one process, fp32 then bf16: the second run gets its own precision, not an error."
    two_runs = textwrap.dedent(f'''
        from prx_nb.config import load_config
        from prx_nb.train import train
        for precision in ("no", "bf16"):
            cfg = load_config("shapes-tiny", overrides=[f"train.mixed_precision={{precision}}", "train.max_steps=2",
                                                       "eval.every=0"])
            print(precision, train(cfg, "{tmp_path}/" + precision, progress=False)["steps"])
    ''')
    r = subprocess.run([sys.executable, "-c", two_runs], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["no", "2", "bf16", "2"], r.stdout
