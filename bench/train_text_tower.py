"""Probe: a speedrun whose text tower trains with the denoiser (GLIDE trains its text transformer from scratch).

    python bench/train_text_tower.py --lr-factor 1 speedrun --preset shapes-cpu-10min --out runs/tw128 \
        text.encoder=words data.text_cache=false train.max_flops=0.77e14 eval.seed=999

Everything after the script's own options is a `prx-nb` command line. The tower (best the small `words` BERT: MiniLM
costs more than the denoiser per caption) runs in every training step with gradients, on its own AdamW at `train.lr`
times `--lr-factor`, under the run's LR schedule. A probe, not a feature: a resumed run does not restore the tower,
several processes would not average its gradients, and the EMA covers the denoiser only (`train.ema_decay=0` evaluates
the weights as trained). The compute budget counts the denoiser; the tower's forward and backward (about 3x its forward,
measured on the first batch with torch's FlopCounterMode) are written to DIR/probe.json with the mean caption length, so
set `train.max_flops` to leave room for them. `bench/tuning_log.py` adds probe.json's `changes` to the run's row.
"""
import argparse, json, sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import prx_nb.train as train_module
from prx_nb.cli import main

seen = {"steps": 0, "tokens": 0, "forward_per_token": None}


def trainable_tower(load):
    "Wrap `load_tower`: the tower it returns takes gradients."
    def load_tower(cfg, ds=None):
        tower = load(cfg, ds)
        seen["tower"] = tower.encoder.requires_grad_(True)
        seen["start"] = [w.detach().clone() for w in tower.encoder.parameters()]
        return tower
    return load_tower


def with_tower_optimizer(make, factor: float):
    "Wrap `make_optimizers`: one more AdamW, over the tower, at train.lr x factor (the schedulers follow every one)."
    def make_optimizers(model, train, extra=None):
        optimizers = make(model, train, extra)
        adamw = dict(lr=train.lr * factor, betas=tuple(train.betas), eps=train.eps, weight_decay=train.weight_decay)
        return [*optimizers, torch.optim.AdamW(seen["tower"].parameters(), **adamw)]
    return make_optimizers


def encode_with_grad(tower, prompts, autocast=None):
    "`encode_in_step` with gradients: the batch's captions, trimmed to the longest, through the training tower."
    ids, masks = tower.pipe._tokenize_prompts(prompts, tower.encoder.device)
    keep = max(int(masks.sum(1).max()), 1)
    ids, masks = ids[:, :keep], masks[:, :keep]
    with autocast():
        if seen["forward_per_token"] is None:
            with FlopCounterMode(display=False) as counter:
                tower.encoder(input_ids=ids, attention_mask=masks)
            seen["forward_per_token"] = counter.get_total_flops() / len(ids) / keep
        states = tower.encoder(input_ids=ids, attention_mask=masks)["last_hidden_state"]
    seen["steps"], seen["tokens"] = seen["steps"] + 1, seen["tokens"] + keep
    return states.float(), masks.bool()


def write_probe(out: Path, factor: float):
    "DIR/probe.json: what the probe changed outside the config, and the tower's training FLOPs per caption."
    tokens = seen["tokens"] / max(seen["steps"], 1)
    tower = dict(mean_tokens=tokens, forward_flops=seen["forward_per_token"] * tokens)
    tower["train_flops"] = 3 * tower["forward_flops"]  # forward, and a backward of about twice its cost
    moved = [(w.detach() - w0).abs().mean() / (w0.abs().mean() + 1e-12) for w, w0 in zip(seen["tower"].parameters(),
                                                                                        seen["start"])]
    tower["moved"] = float(torch.stack(moved).mean())  # mean relative change of its weights: 0 if it never trained
    changes = {"text.train (bench/train_text_tower.py)": True, "text.lr_factor": factor}
    (out / "probe.json").write_text(json.dumps(dict(changes=changes, tower=tower), indent=1) + "\n")
    trained = tower["train_flops"] / 1e6
    print(f"tower: {trained:.1f} MFLOP per caption trained, at {tokens:.1f} tokens -> {out}/probe.json")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr-factor", type=float, default=1.0, help="the tower's AdamW LR as a multiple of train.lr")
    a, command = p.parse_known_args()
    if "--out" not in command:
        raise SystemExit("name the run folder: ... speedrun --out DIR ...")
    if "data.text_cache=false" not in command:  # with cached text states the tower never runs in a step
        raise SystemExit("pass data.text_cache=false: the tower trains only when it encodes the captions in the step")
    train_module.load_tower = trainable_tower(train_module.load_tower)
    train_module.make_optimizers = with_tower_optimizer(train_module.make_optimizers, a.lr_factor)
    train_module.encode_in_step = encode_with_grad
    rc = main(command)
    if rc == 0:
        write_probe(Path(command[command.index("--out") + 1]), a.lr_factor)
    sys.exit(rc)
