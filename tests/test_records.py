"Speedrun records: a run states its compute and its errors, writes its record, and plain diffusers reproduces its score."
import json, sys
from conftest import BIN, ROOT, run

GUIDANCE_FROM_CHECK = """
import runpy, sys, torch
from prx_nb.runs import load_pipeline
guidance_from = runpy.run_path(sys.argv[1])["guidance_from"]
pipe, _ = load_pipeline(sys.argv[2])
config = pipe.transformer.config
x = torch.randn(2, config.in_channels, 32, 32)
text = torch.randn(2, 5, config.context_in_dim)  # two prompts' states: [unconditional, conditional]
denoise = lambda t: pipe.transformer(hidden_states=x, timestep=torch.full((2,), t), encoder_hidden_states=text,
                                     return_dict=False)[0]
with torch.no_grad():
    plain_low, plain_high = denoise(0.2), denoise(0.8)
    with guidance_from(pipe, 0.5):
        low, high = denoise(0.2), denoise(0.8)
    after = denoise(0.2)
assert not torch.equal(plain_low[0], plain_low[1])  # the two halves differ: the check below can fail
assert torch.equal(high, plain_high)  # at t >= 0.5 guidance is untouched
assert torch.equal(low[0], plain_low[1]) and torch.equal(low[1], plain_low[1])  # below: the conditional output twice
assert torch.equal(after, plain_low)  # the hook is gone after the block
with torch.no_grad(), guidance_from(pipe, 0.0, 0.5):
    low, high = denoise(0.2), denoise(0.8)
assert torch.equal(low, plain_low)  # at t <= 0.5 guidance is untouched
assert torch.equal(high[0], plain_high[1]) and torch.equal(high[1], plain_high[1])  # above: conditional twice
"""


def test_speedrun_record_states_compute_and_plain_diffusers_rescores_it(tmp_path):
    out, record = tmp_path / "run", tmp_path / "record.json"
    r = run([str(BIN / "prx-nb"), "speedrun", "--preset", "shapes-tiny", "--out", str(out), "--record", str(record),
             "--change", "a tiny run", "train.max_steps=4", "eval.every=0"])
    printed = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert printed["images_seen"] == 4 * 16 and printed["train_flops"] > 0 and printed["peak_flops"] > 1e8
    assert set(printed["shapes_se"]) == {"single", "count", "relation", "novel", "overall"}
    rec = json.loads(record.read_text())
    assert rec["change"] == "a tiny run" and rec["command"].startswith("prx-nb speedrun --preset shapes-tiny")
    assert rec["steps"] == 4 and rec["shapes"] == json.loads((out / "metrics.json").read_text())["shapes"]
    plain = run([sys.executable, str(ROOT / "bench" / "plain_diffusers.py"), str(out), "--n-per-task", "2",
                 "--out", str(tmp_path / "plain.json")], check=False)
    result = json.loads((tmp_path / "plain.json").read_text())
    assert plain.returncode == (0 if result["within"] else 1), plain.stderr[-2000:]
    assert result["plain"]["n"] == 8 and result["child"]["cls"] == "PRXPixelPipeline"
    assert result["child"]["sampling"] == json.loads((out / "pipeline" / "sampling.json").read_text())
    refused = run([sys.executable, str(ROOT / "bench" / "plain_diffusers.py"), str(out), "--seed", "1234"], check=False)
    assert refused.returncode != 0 and "benchmark" in refused.stderr
    tuning = tmp_path / "tuning.jsonl"
    run([sys.executable, str(ROOT / "bench" / "tuning_log.py"), str(out), "--out", str(tuning)])
    row = json.loads(tuning.read_text())
    assert row["changes"] == {} and row["steps"] == 4 and row["overall"] == rec["shapes"]["overall"]
    assert row["eval_seed"] == 1234 and row["n_per_task"] == 2 and row["train_flops"] == rec["train_flops"]
    sweep = tmp_path / "sweep.jsonl"
    grid = "4:3,4:1:2,4:3:1:0.5,4:3:1:0:0.6"  # the last guides only at t <= 0.6
    run([sys.executable, str(ROOT / "bench" / "sampler_sweep.py"), str(out), "--grid", grid,
         "--n-per-task", "2", "--out", str(sweep)])
    rows = [json.loads(line) for line in sweep.read_text().splitlines()]
    keys = ("steps", "guidance_scale", "shift", "guidance_from", "guidance_until", "n")
    assert [tuple(r[k] for k in keys) for r in rows] == [
        (4, 3.0, 1.0, 0.0, 1.0, 8), (4, 1.0, 2.0, 0.0, 1.0, 8), (4, 3.0, 1.0, 0.5, 1.0, 8), (4, 3.0, 1.0, 0.0, 0.6, 8)]
    run([sys.executable, "-c", GUIDANCE_FROM_CHECK, str(ROOT / "bench" / "sampler_sweep.py"), str(out / "pipeline")])
    bad = run([sys.executable, str(ROOT / "bench" / "sampler_sweep.py"), str(out), "--grid", "40", "--out", str(sweep)],
              check=False)
    assert bad.returncode != 0 and "steps:guidance" in bad.stderr
    empty = run([sys.executable, str(ROOT / "bench" / "sampler_sweep.py"), str(out), "--grid", "4:3,40:3:1:0.6:0.4",
                 "--out", str(sweep)], check=False)  # an interval that guides no step, refused before any sampling
    assert empty.returncode != 0 and "0 <= from <= until <= 1" in empty.stderr and not empty.stdout.strip()
    failures = tmp_path / "failures.jsonl"  # the recorded sampler (4 steps at 3) on the sweep's prompts and seeds
    run([sys.executable, str(ROOT / "bench" / "failure_kinds.py"), str(out), "--n-per-task", "2", "--out",
         str(failures)])
    found = json.loads(failures.read_text())
    tasks = ("single", "count", "relation", "novel")
    assert {task: sum(counts.values()) for task, counts in found["failures"].items()} == dict.fromkeys(tasks, 2)
    passed = {task: found["failures"][task].get("pass", 0) / 2 for task in tasks}
    assert passed == {task: rows[0][task] for task in tasks}  # the sweep's scores for the same sampler and prompts
    assert sum(found["relation_shapes"].values()) == found["failures"]["relation"].get("shape", 0)
    refused = run([sys.executable, str(ROOT / "bench" / "failure_kinds.py"), str(out), "--seed", "1234", "--out",
                   str(failures)], check=False)
    assert refused.returncode != 0 and "benchmark" in refused.stderr


def test_truncated_text_encoder_loads_as_a_text_tower(tmp_path):
    out = tmp_path / "minilm-l2"
    made = run([sys.executable, str(ROOT / "bench" / "truncated_text_encoder.py"), str(out), "--layers", "2"])
    assert "layer 6: mean token-to-token cosine" in made.stdout and "first 2 layers" in made.stdout
    check = "import sys; from prx_nb.architecture import TextTower; t = TextTower.load(sys.argv[1]); "
    check += "print(len(t.encoder.encoder.layer), t.dim, t.encode(['a red circle'])[0].shape[-1])"
    loaded = run([sys.executable, "-c", check, str(out)])
    assert loaded.stdout.split()[-3:] == ["2", "384", "384"]
    bad = run([sys.executable, str(ROOT / "bench" / "truncated_text_encoder.py"), str(out), "--layers", "7"], check=False)
    assert bad.returncode != 0 and "between 1 and 6" in bad.stderr


def test_text_tower_probe_trains_the_tower_and_logs_it(tmp_path):
    out, script = tmp_path / "tw", str(ROOT / "bench" / "train_text_tower.py")
    command = ["speedrun", "--preset", "shapes-tiny", "--out", str(out), "text.encoder=words", "train.max_steps=4",
               "eval.every=0"]
    refused = run([sys.executable, script, *command], check=False)  # cached text states: the tower would never train
    assert refused.returncode != 0 and "data.text_cache=false" in refused.stderr and not out.exists()
    made = run([sys.executable, script, "--lr-factor", "2", *command, "data.text_cache=false"])
    probe = json.loads((out / "probe.json").read_text())
    assert probe["tower"]["moved"] > 0 and "MFLOP per caption trained" in made.stdout  # the tower's weights trained
    tower = probe["tower"]
    assert tower["train_flops"] == 3 * tower["forward_flops"] > 1e5 and tower["mean_tokens"] > 3
    log = tmp_path / "log.jsonl"
    run([sys.executable, str(ROOT / "bench" / "tuning_log.py"), str(out), "--out", str(log)])
    row, metrics = json.loads(log.read_text()), json.loads((out / "metrics.json").read_text())
    assert row["train_flops"] == metrics["train_flops"] + probe["tower"]["train_flops"] * metrics["images_seen"]
    assert row["changes"] == {"data.text_cache": False, "text.encoder": "words", "text.lr_factor": 2.0,
                              "text.train (bench/train_text_tower.py)": True}


def test_failure_kinds_tells_unbound_shapes_from_swapped_ones():
    import copy, runpy
    import numpy as np
    from prx_nb.data import render
    from prx_nb.eval import find_objects, judge_failure, shapes_eval_prompts
    wrong_shape_kind = runpy.run_path(str(ROOT / "bench" / "failure_kinds.py"))["wrong_shape_kind"]
    seen = set()
    for item in shapes_eval_prompts(40, 32, 7):
        first, second = item["scene"]["objects"] if item["task"] == "relation" else (None, None)
        if first is None or first["shape"] == second["shape"]:
            continue
        cases = (("one shape for both", (first["shape"],) * 2), ("swapped", (second["shape"], first["shape"])))
        for kind, shapes in cases:
            scene = copy.deepcopy(item["scene"])
            for obj, shape in zip(scene["objects"], shapes):
                obj["shape"] = shape
            image = render(scene, 32)
            drawn = {o["color"]: o["shape"] for o in find_objects(image)[1]}
            if [drawn.get(first["color"]), drawn.get(second["color"])] != list(shapes):
                continue  # a small shape the judge reads as another: not this test's case
            assert judge_failure(image, item["prompt"]) == "shape"
            assert wrong_shape_kind(image, item["prompt"]) == kind
            seen.add(kind)
    assert seen == {"one shape for both", "swapped"}
