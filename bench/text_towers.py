"""Which text tower gives the higher ShapesEval per CPU-minute? Runs the same speedrun with each encoder.

    python bench/text_towers.py --minutes 8 --out runs/towers

Each run gets the same training-time budget, seed and data; the table reports the whole wall time (data preparation with
the text tower included), the ShapesEval scores, and ShapesEval overall per wall-clock minute.
"""
import argparse, json, time
from pathlib import Path
from prx_nb.config import load_config
from prx_nb.speedrun import speedrun

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--minutes", type=float, default=8.0); ap.add_argument("--out", default="runs/towers")
    ap.add_argument("--encoders", default="minilm,words"); ap.add_argument("--preset", default="shapes-cpu")
    a = ap.parse_args(); rows = []
    for enc in a.encoders.split(","):
        t0 = time.time()
        m = speedrun(load_config(a.preset, overrides=[f"text.encoder={enc}", f"train.max_minutes={a.minutes}"]), Path(a.out) / enc, progress=False)
        wall = (time.time() - t0) / 60; s = m["shapes"]
        rows.append(dict(encoder=enc, wall_min=round(wall, 1), train_min=round(m["train_minutes"], 1), steps=m["steps"],
                         single=s["single"], count=s["count"], relation=s["relation"], overall=round(s["overall"], 3), novel=s["novel"],
                         overall_per_min=round(s["overall"] / wall, 4)))
        print(json.dumps(rows[-1]), flush=True)
    hdr = list(rows[0]); print("| " + " | ".join(hdr) + " |"); print("|" + "---|" * len(hdr))
    for r in rows: print("| " + " | ".join(str(r[k]) for k in hdr) + " |")
    Path(a.out).mkdir(parents=True, exist_ok=True); (Path(a.out) / "text_towers.json").write_text(json.dumps(rows, indent=1))
