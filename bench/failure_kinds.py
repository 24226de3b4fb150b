"""Which ShapesEval rule a saved pipeline's images break, and what its wrong shapes in relations are.

    python bench/failure_kinds.py runs/shapes-cpu-10min --seed 999 \
        --out bench/results/tuning/failures_shapes-cpu-10min.jsonl

Samples every prompt of a draw exactly as `bench/sampler_sweep.py` does with the run's recorded sampler (same prompts,
seeds and chunks, so the pass counts equal that sweep's scores), counts each task's failures by the first rule they
break (`failure_counts`), and splits the relations failed on "shape" by what was drawn: both objects with one shape
when the prompt asks for two (the shapes not bound to their colors), the two shapes swapped, or anything else.
Prompts are drawn with `--seed` (999, the tuning set, by default; the benchmark's 1234 is refused).
"""
import argparse, json, sys, time
from collections import Counter
from pathlib import Path

import numpy as np

from prx_nb.config import Config
from prx_nb.eval import failure_counts, find_objects, judge_failure, parse_prompt, shapes_eval_prompts
from prx_nb.runs import load_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from sampler_sweep import sample_draw  # the sweep's own sampling: its prompts, seeds and chunks


def wrong_shape_kind(image: np.ndarray, prompt: str) -> str:
    "What a relation image that breaks the shape rule drew: 'one shape for both', 'swapped' or 'other'."
    p = parse_prompt(prompt)
    objects = find_objects(image)[1]
    first = next(o for o in objects if o["color"] == p["color1"])  # the shape rule comes after one object per color
    second = next(o for o in objects if o["color"] == p["color2"])
    if p["shape1"] != p["shape2"] and first["shape"] == second["shape"]:
        return "one shape for both"
    if (first["shape"], second["shape"]) == (p["shape2"], p["shape1"]):
        return "swapped"
    return "other"


def failure_row(pipe, sampling: dict, items: list[dict], seed: int) -> dict:
    "Failures by rule per task, and the relations' wrong shapes by kind."
    start = time.time()
    drawn = sample_draw(pipe, items, seed, sampling["size"], sampling["steps"], sampling["guidance_scale"])
    images = [np.asarray(im) for im in drawn]
    relations = [(it, im) for it, im in zip(items, images) if it["task"] == "relation"]
    shapes = Counter(wrong_shape_kind(im, it["prompt"]) for it, im in relations
                     if judge_failure(im, it["prompt"]) == "shape")
    return dict(steps=sampling["steps"], guidance_scale=sampling["guidance_scale"], n=len(items),
                failures=failure_counts(items, images), relation_shapes=dict(shapes.most_common()),
                seconds=round(time.time() - start, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="speedrun folders (their pipeline/)")
    p.add_argument("--n-per-task", type=int, default=100)
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one row a run")
    a = p.parse_args()
    if a.seed == Config().eval.seed:
        raise SystemExit(f"--seed {a.seed} is the benchmark's: study failures on other prompts (999 by default)")
    rows = []
    for run in a.runs:
        pipe, sampling = load_pipeline(run / "pipeline")
        items = shapes_eval_prompts(a.n_per_task, sampling["size"], a.seed)
        rows.append(dict(run=str(run), seed=a.seed, **failure_row(pipe, sampling, items, a.seed)))
        print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
