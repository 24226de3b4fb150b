"Speedrun records: a run states its compute and its errors, writes its record, and plain diffusers reproduces its score."
import json, sys
from conftest import BIN, ROOT, run


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
    run([sys.executable, str(ROOT / "bench" / "sampler_sweep.py"), str(out), "--grid", "4:3,4:1:2", "--n-per-task", "2",
         "--out", str(sweep)])
    rows = [json.loads(line) for line in sweep.read_text().splitlines()]
    assert [(r["steps"], r["guidance_scale"], r["shift"], r["n"]) for r in rows] == [(4, 3.0, 1.0, 8), (4, 1.0, 2.0, 8)]
    bad = run([sys.executable, str(ROOT / "bench" / "sampler_sweep.py"), str(out), "--grid", "40", "--out", str(sweep)],
              check=False)
    assert bad.returncode != 0 and "steps:guidance" in bad.stderr
