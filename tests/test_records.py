"Speedrun records: a run states its compute and its errors, writes its record, and plain diffusers reproduces its score."
import json, sys
from conftest import BIN, ROOT, run


def test_speedrun_record_states_compute_and_plain_diffusers_rescores_it(tmp_path):
    out, record = tmp_path / "run", tmp_path / "record.json"
    r = run([str(BIN / "prx-nb"), "speedrun", "--preset", "shapes-tiny", "--out", str(out), "--record", str(record),
             "--change", "a tiny run", "train.max_steps=4", "eval.every=0"])
    printed = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert printed["images_seen"] == 4 * 16 and printed["train_flops"] > 0 and printed["peak_bf16_flops"] > 1e9
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
