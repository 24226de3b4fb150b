"""The speedrun's tuning log: finished compute-budgeted runs, each as what it changed, its compute and its scores.

    python bench/tuning_log.py RUN [RUN ...] --out bench/results/tuning/2026-12-04_shapes-cpu.jsonl

Each RUN is a `prx-nb speedrun --preset shapes-cpu ... train.max_minutes=null train.max_flops=F eval.seed=999` folder.
A row holds the settings the run changed against its preset (evaluation and stopping settings left out; a probe's
changes outside the config from its probe.json), the compute budget and what it bought (steps, images seen, training
FLOPs with a probe's own, images/s and threads), and ShapesEval on the prompts it was judged on (`eval_seed`: 999 is
the tuning set, 1234 the benchmark) with the overall score's standard error.
The results notebook prints the log; changes are chosen on tuning rows only.
"""
import argparse, json
from pathlib import Path

from prx_nb.config import load_config

IGNORED = ("eval.", "train.max_", "train.checkpoint", "train.log_every")


def changed(base: dict, cfg: dict, prefix: str = "") -> dict:
    "The dotted settings whose value in `cfg` differs from `base`."
    out = {}
    for key in sorted(set(base) | set(cfg)):
        a, b = base.get(key), cfg.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(changed(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = b
    return out


def tuning_row(run: Path) -> dict:
    "One finished run folder as a row of the tuning log."
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "run.json").read_text())["config"]
    base = load_config(cfg["preset"]).to_dict()
    changes = {k: v for k, v in changed(base, cfg).items() if not k.startswith(IGNORED)}
    probe = json.loads((run / "probe.json").read_text()) if (run / "probe.json").exists() else {}
    changes |= probe.get("changes", {})  # a bench probe's changes outside the config (bench/train_text_tower.py)
    shapes = metrics["shapes"]
    compute = {k: metrics.get(k) for k in ("steps", "images_seen", "train_flops", "train_minutes", "images_per_s")}
    if "tower" in probe:  # the trained text tower's FLOPs, which the run's budget did not count
        compute["train_flops"] += probe["tower"]["train_flops"] * compute["images_seen"]
        compute["tower_flops_per_image"] = probe["tower"]["train_flops"]
    scores = {k: shapes[k] for k in ("single", "count", "relation", "overall", "novel")}
    return dict(name=run.name, preset=cfg["preset"], changes=changes, budget=cfg["train"]["max_flops"], **compute,
                threads=metrics.get("threads"), eval_seed=cfg["eval"]["seed"], n_per_task=shapes["n"] // 4, **scores,
                overall_se=metrics["shapes_se"]["overall"], commit=metrics.get("commit"), date=metrics.get("date"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the JSON-lines log to write")
    a = p.parse_args()
    missing = [str(r) for r in a.runs if not (r / "metrics.json").exists()]
    if missing:
        raise SystemExit(f"no metrics.json (run unfinished or not a speedrun folder): {', '.join(missing)}")
    rows = [tuning_row(r) for r in a.runs]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} runs -> {a.out}")


if __name__ == "__main__":
    main()
