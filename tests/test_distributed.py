"Many processes and interrupted runs: 2-process DDP on CPU equals 1 process at the same global batch; SIGKILL + resume equals an uninterrupted run."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import torch
from conftest import BIN, run

PRX = str(BIN / "prx-nb")
TINY = ["train.mixed_precision=no", "train.compile=false", "eval.every=0", "train.log_every=1", "train.ema_decay=0.9"]


def weights(run_dir):
    from diffusers import PRXTransformer2DModel
    return PRXTransformer2DModel.from_pretrained(str(Path(run_dir) / "pipeline"), subfolder="transformer").state_dict()


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if "loss" in r and "event" not in r]


def test_two_process_ddp_equals_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(one), "--max-steps", "6", "train.batch_size=16", *TINY])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "prx_nb", "train", "--preset", "shapes-tiny",
         "--out", str(two), "--max-steps", "6", "train.batch_size=8", *TINY], env=env)
    l1, l2 = losses(one), losses(two)
    assert len(l1) == len(l2) == 6
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=1e-4, atol=1e-5)
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
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", worker, str(tmp_path / "two.pt"), "4", "shard"], env=env)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one["sharded"], two["sharded"], two["world"]) == (False, True, 2)  # the EMA really held DTensor shards
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-6)
    for part in ("weights", "ema"):
        for k in one[part]: torch.testing.assert_close(two[part][k], one[part][k], rtol=1e-4, atol=1e-6, msg=f"{part} {k}")
    for k in two["ema"]: assert torch.equal(two["ema_reloaded"][k], two["ema"][k]), f"sharded EMA checkpoint round trip: {k}"
    assert one["losses"][0] != one["losses"][-1]


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
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args, "--max-steps", "400"],
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
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args, "--max-steps", str(killed_at + 3), "--resume", "latest"], env=env)
    end = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert (out / "pipeline").exists() and end["event"] == "end" and end["steps"] == killed_at + 3
