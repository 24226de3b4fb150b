"Many processes and interrupted runs: 2-process DDP on CPU equals 1 process at the same global batch; SIGKILL + resume equals an uninterrupted run."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from conftest import BIN, run

PRX = str(BIN / "prx-nb")
TINY = ["train.mixed_precision=no", "train.compile=false", "eval.every=0", "train.log_every=1", "train.ema_decay=0.9"]


def weights(run_dir):
    from diffusers import PRXTransformer2DModel
    return PRXTransformer2DModel.from_pretrained(str(Path(run_dir) / "pipeline"), subfolder="transformer").state_dict()


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if "loss" in r and "event" not in r]


def test_two_process_ddp_equals_one_process_and_resumes_on_one(tmp_path):
    """2-process DDP equals one process accumulating the same global batch; its checkpoint resumes on one process, to the
    same losses and weights (the global sample order and every draw are the step's, whatever the world; no cooldown, so
    the 4-step run's schedule is the 8-step one's)."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--preset", "shapes-tiny", "--checkpoint-every", "4", "train.batch_size=8", "train.global_batch=16", "train.cooldown=0", *TINY]
    run([PRX, "train", "--out", str(one), "--max-steps", "8", *common])  # accumulation 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "prx_nb", "train", "--out", str(two),
         "--max-steps", "4", *common], env=env)
    l1, l2 = losses(one), losses(two)
    assert len(l1) == 8 and len(l2) == 4
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1[:4]), rtol=1e-4, atol=1e-5)
    r = run([PRX, "train", "--out", str(two), "--max-steps", "8", "--resume", "latest", *common])
    assert "resuming 2 processes' checkpoint with 1: the same global sample order, from batch 8" in r.stderr
    torch.testing.assert_close(torch.tensor(losses(two)[-4:]), torch.tensor(l1[4:]), rtol=1e-4, atol=1e-5)
    w1, w2 = weights(one), weights(two)
    for k in w1: torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-5, msg=k)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["--preset", "shapes-tiny", "--max-steps", "40", "--checkpoint-every", "8", *TINY, "train.keep_checkpoints=3"]  # 16 steps an epoch
    run([PRX, "train", "--out", str(full), *args])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.Popen([PRX, "train", "--out", str(killed), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.time()
    while not (killed / "checkpoints" / "step-24" / "trainer.json").exists():  # in the second epoch
        assert p.poll() is None and time.time() - t0 < 600, "the run ended or stalled before its second checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (killed / "pipeline").exists(), "the run finished before it was killed"
    ck = killed / "checkpoints"
    run([PRX, "train", "--out", str(killed), *args, "--resume", "latest"])
    assert not [d.name for d in ck.iterdir() if not (d.name.startswith("step-") and (d / "trainer.json").exists())], "a half-written checkpoint remains"
    w1, w2 = weights(full), weights(killed)
    for k in w1: torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)
    torch.testing.assert_close(torch.tensor(losses(killed)[-16:]), torch.tensor(losses(full)[-16:]), rtol=1e-4, atol=1e-6)


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"; args = ["--preset", "shapes-tiny", "--out", str(out), "--max-steps", "400", "--checkpoint-every", "3", *TINY]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.Popen([PRX, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while not (out / "checkpoints" / "step-3" / "trainer.json").exists():
        assert p.poll() is None and time.time() - t0 < 600; time.sleep(0.02)
    p.send_signal(signal.SIGTERM); stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 3, stderr[-2000:]  # interrupted: checkpoint saved, resume with --resume latest (not "finished")
    ev = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    stopped = [e for e in ev if e.get("event") == "interrupted"]
    assert stopped and (out / "checkpoints" / f"step-{stopped[0]['step']}" / "trainer.json").exists() and not (out / "pipeline").exists()
    assert json.loads(stdout[stdout.index("{"):])["interrupted"] is True


def test_fsdp2_two_processes_equal_one_process(tmp_path):
    "FSDP2 on CPU: torch's fully_shard per PRX block (as accelerate's FSDP2 plugin wraps on GPUs), 2 gloo processes at the same global batch."
    worker, env = str(Path(__file__).parent / "fsdp2_worker.py"), dict(os.environ, OMP_NUM_THREADS="1")
    run([sys.executable, worker, str(tmp_path / "one.pt"), "4", "plain"], env=env)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, str(tmp_path / "two.pt"), "4", "shard"], env=env)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one["sharded"], two["sharded"], two["world"]) == (False, True, 2)  # the EMA really held DTensor shards
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-6)
    for part in ("weights", "ema"):
        for k in one[part]: torch.testing.assert_close(two[part][k], one[part][k], rtol=1e-4, atol=1e-6, msg=f"{part} {k}")
    for k in two["ema"]: assert torch.equal(two["ema_reloaded"][k], two["ema"][k]), f"sharded EMA checkpoint round trip: {k}"
    assert one["losses"][0] != one["losses"][-1]



def test_muon_under_fsdp2_equals_torch_muon_in_one_process(tmp_path):
    """GroupedMuon on FSDP2 shards (2 gloo processes) takes torch.optim.Muon's steps on whole matrices (one process), to the
    bf16 rounding of Newton-Schulz; the orthogonalisations are split between the ranks, and uneven shards (7 rows) work."""
    worker, env = str(Path(__file__).parent / "fsdp2_worker.py"), dict(os.environ, OMP_NUM_THREADS="1")
    run([sys.executable, worker, str(tmp_path / "one.pt"), "4", "plain", "torch-muon"], env=env)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, str(tmp_path / "two.pt"), "4", "shard", "muon"], env=env)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert two["sharded"] and two["world"] == 2
    done = two["orthogonalised"]
    assert len(done) == 2 and min(done) > 0 and max(done) - min(done) <= 4, done  # each rank did its half, every step
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-6)
    for part in ("weights", "ema"):
        for k, w in one[part].items():
            gap = float((two[part][k] - w).norm() / w.norm().clamp(min=1e-12))
            assert gap < 5e-3, f"{part} {k}: relative difference {gap:.2e}"
    torch.testing.assert_close(two["lone"], one["lone"], rtol=0, atol=1e-6)
    assert any(not torch.equal(two["weights"][k], one["weights"][k]) for k in one["weights"])  # really another code path

def _worker_pid(parent:int, rank:int)->int|None:
    "The pid of the torchrun worker of `rank` below `parent` (read from /proc)."
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env and f"TORCHELASTIC_RUN_ID".encode() in b"\0".join(env) and int((d / "stat").read_text().split()[3]) == parent:
                return int(d.name)
        except (OSError, ValueError, IndexError): continue


def test_a_dead_rank_ends_the_run_with_a_clear_error(tmp_path):
    "SIGKILL one of two ranks mid-run: the launch ends (no hang) naming the dead rank, and the run resumes from its last checkpoint."
    out = tmp_path / "run"; env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args = ["-m", "prx_nb", "train", "--preset", "shapes-tiny", "--out", str(out), "--checkpoint-every", "3", "train.batch_size=8", *TINY]
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, "--max-steps", "400"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0, pid = time.time(), None
    while not (out / "checkpoints" / "step-3" / "trainer.json").exists():
        assert p.poll() is None and time.time() - t0 < 600, "the run ended or stalled before its first checkpoint"
        pid = pid or _worker_pid(p.pid, 1); time.sleep(0.02)
    assert pid, "rank 1's process not found"
    os.kill(pid, signal.SIGKILL)
    _, stderr = p.communicate(timeout=180)  # a hang fails here
    assert p.returncode != 0 and "rank: 1" in stderr and "SIGKILL" in stderr, stderr[-3000:]
    assert not (out / "pipeline").exists()
    killed_at = max(int(d.name[5:]) for d in (out / "checkpoints").glob("step-*") if (d / "trainer.json").exists())
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, "--max-steps", str(killed_at + 3), "--resume", "latest"], env=env)
    end = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert (out / "pipeline").exists() and end["event"] == "end" and end["steps"] == killed_at + 3


# `prx-nb launch ... --simulate`: accelerate's own FSDP2 preparation on gloo CPU processes (the train chapter's
# fsdp2_on_cpu). What differs from GPUs: gloo instead of NCCL, fp32 (mixed_precision=no), no overlap of compute and
# communication. Muon's Newton-Schulz runs in bf16: a different order of the gradient's sums (2 ranks against 1) moves
# the weights by ~1e-3 of their norm (DDP shows the same), so whole-model weights are compared by relative norm.
LAUNCH_TINY = ["train.batch_size=8", "train.global_batch=16", "train.mixed_precision=no", "train.log_every=1", "eval.every=0",
               "train.compile=false"]
TRICKS = ["model.depth=4", "tricks.tread=0.5", "tricks.tread_start=1", "tricks.tread_end=2", "tricks.repa=0.5",
          "tricks.repa_layer=1"]  # with tricks.teacher=<the teacher fixture's folder>


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    "A Shapes teacher for REPA, trained briefly once (a run would otherwise train its own for ~2 minutes)."
    from prx_nb.teachers import train_shapes_teacher
    path = tmp_path_factory.mktemp("teacher") / "shapes-teacher"
    train_shapes_teacher(path, n=256, steps=20)
    return f"tricks.teacher={path}"


def launch(config, layout, out, *args, check=True):
    return run([PRX, "launch", config, "--simulate", layout, "--", "train", "--preset", "shapes-tiny", "--out", str(out),
                "--max-steps", "16", "--checkpoint-every", "8", *LAUNCH_TINY, *args], check=check, env=dict(os.environ, OMP_NUM_THREADS="1"))


def one_process(out, *args):
    "The same global batch of 16 in one process, in one micro-batch (accumulation draws each micro-batch on its own)."
    return run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "16", *LAUNCH_TINY, "train.batch_size=16",
                *args])


def start_record(out):
    return json.loads((Path(out) / "metrics.jsonl").read_text().splitlines()[0])


def relative_gap(a, b):
    "Whole-model relative difference of two state dicts: ||a - b|| / ||b||."
    return float(sum((a[k] - b[k]).float().norm() ** 2 for k in b) ** 0.5 / sum(b[k].float().norm() ** 2 for k in b) ** 0.5)


@pytest.fixture(scope="module")
def fsdp2_muon(tmp_path_factory, teacher):
    "The must-show launch: Muon, TREAD and REPA under FSDP2 on 2 CPU processes, and one process at the same global batch."
    root = tmp_path_factory.mktemp("fsdp2")
    launch("fsdp2-8gpu", "1x2", root / "A", "train.optimizer=muon", *TRICKS, teacher)
    one_process(root / "B", "train.optimizer=muon", *TRICKS, teacher)
    return root


def test_fsdp2_launch_with_muon_tread_repa_equals_one_process(fsdp2_muon):
    A, B = fsdp2_muon / "A", fsdp2_muon / "B"
    assert start_record(A)["distributed"] == dict(type="FSDP2", world=2, machines=1, shard=2, replicate=1)
    assert start_record(B)["distributed"]["type"] == "single process"
    assert sorted(p.name for p in (A / "checkpoints" / "step-16").glob("ema-rank*.pt")) == ["ema-rank0.pt", "ema-rank1.pt"]
    assert (A / "checkpoints" / "step-16" / "pytorch_model_fsdp_0").is_dir()  # accelerate's sharded checkpoint
    torch.testing.assert_close(torch.tensor(losses(A)), torch.tensor(losses(B)), rtol=2e-3, atol=1e-5)
    for part in ("loss_flow", "loss_repa"):  # the logged parts are the global batch's too, not rank 0's
        logged = [[r[part] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if part in r] for d in (A, B)]
        assert len(logged[0]) == len(logged[1]) == 16, part
        torch.testing.assert_close(torch.tensor(logged[0]), torch.tensor(logged[1]), rtol=2e-3, atol=1e-5, msg=part)
    gap = relative_gap(weights(A), weights(B))
    assert gap < 5e-3, gap


def test_hsdp_config_on_two_machines_equals_one_process(tmp_path):
    "PRX's 4-node config simulated as 2 machines of 1 process (FSDP2 across the machines), AdamW: to fp32 rounding."
    launch("fsdp2-4x8gpu", "2x1", tmp_path / "A", "train.optimizer=adamw")
    one_process(tmp_path / "B", "train.optimizer=adamw")
    assert start_record(tmp_path / "A")["distributed"] == dict(type="FSDP2", world=2, machines=2, shard=2, replicate=1)
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "A")), torch.tensor(losses(tmp_path / "B")), rtol=1e-4, atol=1e-6)
    w1, w2 = weights(tmp_path / "B"), weights(tmp_path / "A")
    for k in w1: torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-5, msg=k)


def _descendants(pid):
    "Every process below `pid` (read from /proc)."
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try: children.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
            except (OSError, IndexError, ValueError): pass
    found, todo = [], [pid]
    while todo:
        found += children.get(todo[-1], []); todo = todo[:-1] + children.get(todo[-1], [])
    return found


def _alive(pid):
    try: return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False


def test_fsdp2_launch_killed_everywhere_resumes_to_the_same_weights(fsdp2_muon, teacher, tmp_path):
    out = tmp_path / "run"
    argv = [PRX, "launch", "fsdp2-8gpu", "--simulate", "1x2", "--", "train", "--preset", "shapes-tiny", "--out", str(out),
            "--max-steps", "16", "--checkpoint-every", "8", *LAUNCH_TINY, "train.optimizer=muon", *TRICKS, teacher]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    t0, pids = time.time(), []
    while not (out / "checkpoints" / "step-8" / "manifest.json").exists():
        assert p.poll() is None and time.time() - t0 < 600, "the launch ended or stalled before its first checkpoint"
        pids = _descendants(p.pid) or pids; time.sleep(0.05)
    pids = [p.pid, *_descendants(p.pid)]
    assert len(pids) >= 4, pids  # the launcher, accelerate launch (torchrun's agent) and its 2 workers at least
    for pid in pids:
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    p.wait()
    time.sleep(1)
    assert not [pid for pid in pids if _alive(pid)], "a process of the killed launch is still running"
    assert not (out / "pipeline").exists(), "the launch finished before it was killed"
    launch("fsdp2-8gpu", "1x2", out, "train.optimizer=muon", *TRICKS, teacher, "--resume", "latest")
    gap = relative_gap(weights(out), weights(fsdp2_muon / "A"))
    assert gap < 1e-5, gap  # the same layout resumed: the uninterrupted launch's weights
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "16", *LAUNCH_TINY,
             "train.optimizer=muon", *TRICKS, teacher, "--resume", "latest"], check=False)
    assert r.returncode == 2 and "2 FSDP2 processes" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-1500:]
