"The prx-nb command line: config errors, train, checkpoints, sample, eval."
import json, os
from pathlib import Path
from conftest import BIN, run

PRX = str(BIN / "prx-nb")


def test_help_lists_subcommands():
    out = run([PRX, "--help"]).stdout
    for cmd in ("speedrun", "train", "sample", "eval", "data", "config", "ablate"): assert cmd in out


def test_ablate_rejects_unknown_runs(tmp_path):
    r = run([PRX, "ablate", "--preset", "shapes-tiny", "--out", str(tmp_path), "--runs", "baseline,+magic"], check=False)
    assert r.returncode == 2 and "unknown ablation" in r.stderr and "+tread" in r.stderr


def test_ablate_rejects_seeds_that_are_not_integers(tmp_path):
    r = run([PRX, "ablate", "--preset", "shapes-tiny", "--out", str(tmp_path), "--seeds", "0,one"], check=False)
    assert r.returncode == 2 and "--seeds takes comma-separated integers" in r.stderr and "'0,one'" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_unknown_config_key_is_a_clear_error():
    r = run([PRX, "config", "--preset", "shapes-cpu", "train.learning_rate=1"], check=False)
    assert r.returncode == 2
    assert "train.learning_rate" in r.stderr and "lr" in r.stderr and "warmup_steps" in r.stderr


def test_bad_values_name_the_key_value_and_what_is_accepted(tmp_path):
    "A wrong value ends in one line naming the key, the value and what the key accepts; no traceback, nothing trained."
    for override, words in (("train.lr=abc", ("train.lr", "'abc'", "a number")),
                            ("train.batch_size=0", ("train.batch_size", "0", ">= 1"))):
        r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "x"), override], check=False)
        assert r.returncode != 0, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_unknown_preset_and_bad_override():
    r = run([PRX, "config", "--preset", "nope"], check=False)
    assert r.returncode == 2 and "shapes-cpu" in r.stderr
    r = run([PRX, "config", "train.lr"], check=False)
    assert r.returncode == 2 and "section.key=value" in r.stderr


def test_yaml_config_file(tmp_path):
    f = tmp_path / "c.yaml"; f.write_text("preset: shapes-tiny\ntrain:\n  lr: 0.005\n")
    out = run([PRX, "config", "--config", str(f), "eval.steps=7"]).stdout
    assert "lr: 0.005" in out and "steps: 7" in out and "preset: shapes-tiny" in out


def test_train_writes_pipeline_checkpoints_and_log(tiny_run):
    assert (tiny_run / "pipeline" / "model_index.json").exists()
    assert json.loads((tiny_run / "pipeline" / "sampling.json").read_text())["size"] == 32
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == ["step-20"]
    recs = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["event"] == "end" and recs[-1]["steps"] == 30
    assert any(r.get("event") == "eval" for r in recs)
    assert not list(tiny_run.glob("**/*.tmp")) and not list(tiny_run.glob("checkpoints/.tmp*"))


def test_resume_continues_from_latest(tiny_run, tmp_path):
    import shutil
    out = tmp_path / "resumed"; shutil.copytree(tiny_run, out)
    shutil.rmtree(out / "pipeline")
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "40", "--resume", "latest"])
    assert json.loads(r.stdout[r.stdout.index("{"):])["steps"] == 40
    starts = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"start"' in l]
    assert starts[-1]["step"] == 20


def test_sample_and_eval(tiny_run, tmp_path):
    png = tmp_path / "a.png"
    run([PRX, "sample", "--pipeline", str(tiny_run / "pipeline"), "--prompt", "two red squares on a white background", "--out", str(png), "--steps", "3"])
    from PIL import Image
    assert Image.open(png).size == (32, 32)
    js = tmp_path / "e.json"
    run([PRX, "eval", "--pipeline", str(tiny_run / "pipeline"), "--metrics", "shapes", "--n-per-task", "2", "--steps", "3", "--out", str(js)])
    res = json.loads(js.read_text())["shapes"]
    assert set(res) >= {"single", "count", "relation", "overall", "novel"} and 0 <= res["overall"] <= 1
    r = run([PRX, "eval", "--pipeline", str(tiny_run / "pipeline"), "--metrics", "fidd", "--out", str(js)], check=False)
    assert r.returncode == 2 and "available: shapes, fid-shapes" in r.stderr
    r = run([PRX, "eval", "--pipeline", str(tiny_run / "pipeline"), "--metrics", "fid", "--n-per-task", "2", "--steps", "2", "--out", str(js)], check=False)
    assert r.returncode == 0 or (r.returncode == 2 and "weights-inception-2015-12-05-6726825d.pth" in r.stderr), r.stderr[-2000:]


def test_eval_shapes_distribution_metrics(tiny_run, tmp_path):
    "fid-shapes and cmmd-shapes run offline with a Shapes feature network given by path."
    from transformers import Dinov2Config, Dinov2Model
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                             image_size=32)).save_pretrained(str(tmp_path / "teacher"))
    js = tmp_path / "e.json"
    run([PRX, "eval", "--pipeline", str(tiny_run / "pipeline"), "--metrics", "shapes,fid-shapes,cmmd-shapes", "--n-per-task", "3",
         "--steps", "2", "--teacher", str(tmp_path / "teacher"), "--out", str(js)])
    res = json.loads(js.read_text())
    assert res["fid-shapes"] > 0 and res["cmmd-shapes"] > 0 and 0 <= res["shapes"]["overall"] <= 1 and res["sampling"]["steps"] == 2


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    "A NaN loss is logged and its batch skipped; `train.max_bad_steps` in a row stop the run with what to change."
    out = tmp_path / "nan"
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "flow.noise_scale=.nan"], check=False)
    assert r.returncode == 2 and "flow.noise_scale=nan: expected > 0" in r.stderr  # a NaN setting is refused up front
    # a NaN timestep scale inside the model (model.* takes any float) makes every loss NaN at run time
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "model.time_factor=.nan", "train.max_bad_steps=3"], check=False)
    assert r.returncode == 2 and "3 non-finite losses in the last 3 batches" in r.stderr
    assert "train.lr" in r.stderr
    ev = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "skip" for e in ev) == 3 and not (out / "pipeline").exists()


def test_data_prepare_in_parallel_then_train_reuses_it(tmp_path):
    out, ov = tmp_path / "run", ["data.shard_size=100"]  # shapes-tiny: 256 images, 3 shards
    r1 = run([PRX, "data", "prepare", "--preset", "shapes-tiny", "--out", str(out), *ov], env=dict(os.environ, RANK="1", WORLD_SIZE="2"))
    assert "worker 1 of 2" in r1.stdout and not (out / "data" / "prepared" / "prepared.json").exists()
    assert [p.name for p in sorted((out / "data" / "prepared").glob("shard-*"))] == ["shard-00001"]
    r0 = run([PRX, "data", "prepare", "--preset", "shapes-tiny", "--out", str(out), *ov], env=dict(os.environ, RANK="0", WORLD_SIZE="2"))
    info = json.loads(r0.stdout.strip().splitlines()[-1]); assert info["n"] == 256 and info["shards"] == 3
    index = out / "data" / "prepared" / "prepared.json"; before = index.stat().st_mtime_ns
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "2", "eval.every=0", *ov])
    assert index.stat().st_mtime_ns == before, "train prepared the data again instead of reusing it"
    r = run([PRX, "data", "prepare", "--preset", "shapes-tiny", "--out", str(out)], env=dict(os.environ, RANK="0", WORLD_SIZE="2"), check=False)
    assert r.returncode == 2 and "data.shard_size" in r.stderr


WANDB_STUB = '''
import json, os
from types import SimpleNamespace
calls = []
def _rec(*a, **k): calls.append([a, {k2: v for k2, v in k.items() if k2 != "config"}]); json.dump(calls, open(os.environ["WANDB_STUB_LOG"], "w"), default=str)
class _Run:
    def log(self, d, step=None): _rec("log", d, step=step)
    def finish(self): _rec("finish")
def init(**k): _rec("init", **k); return _Run()
util = SimpleNamespace(generate_id=lambda: "abc123")
'''


def test_wandb_logging_is_optional(tmp_path):
    stub = tmp_path / "stub"; stub.mkdir(); (stub / "wandb.py").write_text(WANDB_STUB); log = tmp_path / "calls.json"
    env = dict(os.environ, PYTHONPATH=str(stub), WANDB_STUB_LOG=str(log))
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "run"), "--max-steps", "10", "eval.every=5", "train.wandb=my-project"], env=env)
    calls = json.loads(log.read_text()); kinds = [c[0][0] for c in calls]
    assert kinds[0] == "init" and calls[0][1]["project"] == "my-project" and calls[0][1]["id"] == "abc123" and kinds[-1] == "finish"
    logged = [c[0][1] for c in calls if c[0][0] == "log"]
    assert any("train/loss" in d for d in logged) and any("eval/overall" in d for d in logged)
    import importlib.util
    if importlib.util.find_spec("wandb") is None:  # not installed: a clear error, before any training
        r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "run2"), "--max-steps", "2", "train.wandb=p"], check=False)
        assert r.returncode == 2 and "pip install wandb" in r.stderr


def test_publish_fails_before_writing_anything_without_token_or_hub(tmp_path, tiny_run):
    import shutil
    pipe = tmp_path / "run" / "pipeline"; shutil.copytree(tiny_run / "pipeline", pipe)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")} | {"HF_HOME": str(tmp_path / "hf")}
    r = run([PRX, "publish", "--pipeline", str(pipe), "--repo-id", "someone/prx-shapes"], env=env, check=False)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and not (pipe / "README.md").exists()
    r = run([PRX, "publish", "--pipeline", str(pipe), "--repo-id", "someone/prx-shapes"], env=env | {"HF_TOKEN": "hf_fake"}, check=False)
    assert r.returncode == 2 and "cannot reach the Hugging Face Hub" in r.stderr and not (pipe / "README.md").exists()
    r = run([PRX, "publish", "--pipeline", str(pipe), "--repo-id", "someone/prx-shapes", "--dry-run"], env=env)
    assert json.loads(r.stdout)["uploaded"] is False and (pipe / "README.md").exists()


def test_runs_share_prepared_data_through_the_data_cache(tmp_path):
    "With PRX_NB_DATA_CACHE (or data.cache_dir) a second run of the same data links to the first run's preparation."
    env, ov = dict(os.environ, PRX_NB_DATA_CACHE=str(tmp_path / "cache")), ["--max-steps", "1", "eval.every=0", "data.n=64"]
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "a"), *ov], env=env)
    index = tmp_path / "a" / "data" / "prepared" / "prepared.json"; before = index.stat().st_mtime_ns
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "b"), *ov, "train.lr=1e-3"], env=env)
    assert "/cache/" in r.stdout and ", ready" in r.stdout, r.stdout  # the plan says where the data is, found ready
    a, b = (tmp_path / name / "data" for name in "ab")
    assert a.is_symlink() and b.resolve() == a.resolve() and a.resolve().parent == (tmp_path / "cache").resolve()
    assert index.stat().st_mtime_ns == before, "the second run prepared the shared data again"
    assert json.loads(index.read_text())["n"] == 64


def test_data_prepare_streaming_in_parallel(tmp_path):
    out, ov = tmp_path / "run", ["data.shard_size=60", "data.streaming=true"]  # shapes-tiny: 256 images streamed, split between 2 workers
    for rank in ("1", "0"):
        r = run([PRX, "data", "prepare", "--preset", "shapes-tiny", "--out", str(out), *ov], env=dict(os.environ, RANK=rank, WORLD_SIZE="2"))
    info = json.loads(r.stdout.strip().splitlines()[-1]); assert info["n"] == 256 and info["shards"] == 6  # 128 rows a worker: 60 + 60 + 8
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "2", "eval.every=0", *ov])
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "x"), "data.streaming=true"], check=False)
    assert r.returncode == 2 and "data.shard_size" in r.stderr


def test_max_flops_stops_at_the_compute_budget(tmp_path):
    "train.max_flops: a run stops at the first step whose training FLOPs (flops_per_image x images seen) reach it."
    def end(out, budget):
        run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "train.max_steps=null", "train.max_minutes=null",
             f"train.max_flops={budget}", "eval.every=0", "train.mixed_precision=no", "data.n=64"])
        return next(r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "end")
    first = end(tmp_path / "one", 1)
    assert first["steps"] == 1 and first["images_seen"] == 16
    per_step = first["train_flops"]
    third = end(tmp_path / "three", 2.5 * per_step)
    assert third["steps"] == 3 and third["train_flops"] == 3 * per_step


def test_max_flops_charges_repa_only_until_repa_until(tmp_path):
    "REPA's FLOPs count while it runs: after tricks.repa_until a step costs the rest; a resumed run counts on the same."
    from transformers import Dinov2Config, Dinov2Model
    teacher = tmp_path / "teacher"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                             image_size=32)).save_pretrained(str(teacher))
    def train(out, budget, *more):
        r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(out), "train.max_steps=null", "train.max_minutes=null",
                 f"train.max_flops={budget}", "eval.every=0", "train.mixed_precision=no", "data.n=64", "model.depth=4",
                 "tricks.repa=0.5", f"tricks.teacher={teacher}", "tricks.repa_until=0.5", "train.checkpoint_every=4", *more])
        log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return r.stdout, next(e for e in log if e.get("event") == "start"), [e for e in log if e.get("event") == "end"][-1]
    _, start, one = train(tmp_path / "one", 1)
    full, repa = start["flops_per_image"], start["repa_flops"]
    assert 0 < repa < full and one["steps"] == 1 and one["train_flops"] == 16 * full  # progress 0: REPA on
    budget, spent, steps = 4.5 * 16 * full, 0.0, 0
    while spent < budget:  # REPA's share while progress (FLOPs spent / budget) is under 0.5
        spent, steps = spent + 16 * (full - (repa if spent / budget >= 0.5 else 0.0)), steps + 1
    stdout, _, end = train(tmp_path / "half", budget)
    assert steps > 5 and end["steps"] == steps and end["train_flops"] == spent  # more steps than the 5 REPA all along takes
    assert f"stop after {steps} steps of 16" in stdout
    _, _, resumed = train(tmp_path / "half", budget, "--resume", "4")  # past repa_until: REPA stays off after the restart
    assert (resumed["steps"], resumed["train_flops"]) == (steps, spent)
