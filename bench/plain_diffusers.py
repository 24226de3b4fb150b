"""A speedrun's saved pipeline judged through plain diffusers, against the run's own metrics.json.

    python bench/plain_diffusers.py runs/shapes-cpu                      # 100 fresh prompts per task, seed 4321
    python bench/plain_diffusers.py runs/shapes-cpu --n-per-task 200 --seed 7 --out runs/shapes-cpu/plain.json

A child process loads `DIR/pipeline` with `diffusers.PRXPixelPipeline.from_pretrained` alone (it asserts at the end that
prx_nb was never imported), reads the recorded sampling settings from `sampling.json`, and draws one prompt per call
(diffusers 0.42's pipeline builds the guidance batch for one prompt), prompt i from `torch.Generator().manual_seed(seed
+ i)` (and, for a stochastic scheduler's noise at each step, `torch.manual_seed(seed + i)`). The prompts are fresh
canonical ShapesEval prompts drawn with a seed other than the benchmark's (1234) and the tuning set's (999). The parent
judges the images with ShapesEval and compares overall with metrics.json: the two are independent estimates, so their
difference is set against two standard errors of a difference.
"""
import argparse, json, subprocess, sys, tempfile, textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent('''
    import json, sys, numpy as np, torch
    from diffusers import PRXPixelPipeline
    pipeline, prompts_file, out = sys.argv[1:4]
    pipe = PRXPixelPipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    s = json.load(open(pipeline + "/sampling.json"))
    prompts, seed = json.load(open(prompts_file))
    images = []
    for i, prompt in enumerate(prompts):
        torch.manual_seed(seed + i)  # a stochastic scheduler's fresh noise at each step
        image = pipe(prompt, height=s["size"], width=s["size"], num_inference_steps=s["steps"],
                     guidance_scale=s["guidance_scale"], use_resolution_binning=False,
                     generator=torch.Generator().manual_seed(seed + i)).images[0]
        images.append(np.asarray(image))
    assert not any(m == "prx_nb" or m.startswith("prx_nb.") for m in sys.modules), "prx_nb was imported"
    np.save(out, np.stack(images))
    print(json.dumps(dict(sampling=s, images=len(images), cls=type(pipe).__name__)))
''')


def plain_diffusers_eval(run, n_per_task: int = 100, seed: int = 4321) -> dict:
    "ShapesEval of RUN/pipeline sampled by plain diffusers on fresh prompts, beside RUN/metrics.json."
    from prx_nb.eval import score_images, shapes_eval_prompts, standard_errors

    run = Path(run)
    if seed in (1234, 999):
        raise SystemExit(f"--seed {seed} is the benchmark's or the tuning set's; pick another for fresh prompts")
    metrics = json.loads((run / "metrics.json").read_text())
    items = shapes_eval_prompts(n_per_task, metrics["sampling"]["size"], seed)
    with tempfile.TemporaryDirectory() as d:
        Path(d, "prompts.json").write_text(json.dumps([[it["prompt"] for it in items], seed]))
        child = subprocess.run([sys.executable, "-c", CHILD, str(run / "pipeline"), f"{d}/prompts.json", f"{d}/x.npy"],
                               capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"the plain-diffusers process failed:\n{child.stderr[-3000:]}")
        images = list(np.load(f"{d}/x.npy"))
    plain = score_images(items, images)
    ours, ours_se, plain_se = metrics["shapes"], standard_errors(metrics["shapes"]), standard_errors(plain)
    diff_se = (ours_se["overall"] ** 2 + plain_se["overall"] ** 2) ** 0.5
    gap = plain["overall"] - ours["overall"]
    return dict(plain=plain, plain_se=plain_se, metrics=ours, metrics_se=ours_se, seed=seed, gap=gap,
                two_se_of_difference=2 * diff_se, two_se_of_metrics=2 * ours_se["overall"],
                within=abs(gap) <= 2 * diff_se, child=json.loads(child.stdout.strip().splitlines()[-1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a speedrun folder: its pipeline/ and metrics.json")
    p.add_argument("--n-per-task", type=int, default=100)
    p.add_argument("--seed", type=int, default=4321, help="prompt and noise seed (not 1234 or 999)")
    p.add_argument("--out", default=None, help="also write the result as JSON")
    a = p.parse_args()
    res = plain_diffusers_eval(a.run, a.n_per_task, a.seed)
    tasks = ("single", "count", "relation", "overall", "novel")
    print(f"{'':30s}" + "".join(f"{t:>10s}" for t in tasks) + f"{'prompts':>9s}")
    for name, s, se in (("plain diffusers, seed " + str(a.seed), res["plain"], res["plain_se"]),
                        ("metrics.json", res["metrics"], res["metrics_se"])):
        print(f"{name:30s}" + "".join(f"{s[t]:10.3f}" for t in tasks) + f"{s['n']:9d}")
        print(f"{'  one standard error':30s}" + "".join(f"{se[t]:10.3f}" for t in tasks))
    print(f"overall gap {res['gap']:+.3f}; two standard errors of the difference {res['two_se_of_difference']:.3f}, "
          f"of metrics.json alone {res['two_se_of_metrics']:.3f}: {'within' if res['within'] else 'OUTSIDE'}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0 if res["within"] else 1


if __name__ == "__main__":
    sys.exit(main())
