"""Training-step throughput and MFU of a preset, against the reference way of training, in one run.

    python bench/train_step.py --preset shapes-cpu                 # CPU, the speedrun preset's batch
    python bench/train_step.py --preset shapes-cpu --out runs/bench/train_step.json

MFU = model FLOPs per step / step time / peak, where the peak is a large bf16 (and fp32) matmul timed here, in this process,
on this machine. Model FLOPs count the useful work only (text at its real, trimmed length), so a step that wastes time on
padding gets a lower MFU. The ladder starts from a reference-style step (text encoded every step, padded to 256 tokens, a
dense attention mask materialised in every block, eager mode) and adds one fast path per row. Every row calls prx-nb's own
`prx_nb.flow.train_step` (the step `prx-nb train` runs), so the rows differ only in what the step is given: the reference
rows are deliberately handed a text encoder that runs every step, text padded to 256 tokens and a dense mask (the
reference code's habits), the last row the cached, trimmed text table, the device's attention backend and torch.compile,
as `prx-nb train` does. A separate row times the data loader against the compute of one step, and another the whole loop.
"""
import argparse, json, tempfile, time
from contextlib import contextmanager
from pathlib import Path

import torch
import diffusers.models.transformers.transformer_prx as prx_mod
from prx_nb.architecture import build_denoiser, set_attention, flops_per_image, TextTower
from prx_nb.config import TricksConfig, load_config
from prx_nb.data import shapes_example
from prx_nb.flow import train_step
from prx_nb.speedrun import matmul_peak
from prx_nb.tricks import Tricks


def sync(device):
    if torch.device(device).type == "cuda": torch.cuda.synchronize()


@contextmanager
def dense_mask():
    "Materialise the joint attention mask as (B, heads, L_img, L_all) in every block, as the reference code does."
    orig = prx_mod.dispatch_attention_fn
    def dense(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None: attn_mask = attn_mask.expand(q.shape[0], q.shape[2], q.shape[1], k.shape[1]).contiguous()
        return orig(q, k, v, attn_mask=attn_mask, **kw)
    prx_mod.dispatch_attention_fn = dense
    try: yield
    finally: prx_mod.dispatch_attention_fn = orig


class SyntheticText:
    """Offline stand-in for a big text tower (GPU runs with no hub access): random embeddings of the encoder's width, prompts of
    `length` tokens or fewer, padded to 256. With `encoder=True` every encode also runs a randomly initialised Gemma2-2B-sized
    model over the 256 padded tokens: the FLOPs of T5-Gemma-2B's encoder, which is what the reference step pays each step
    (on CPU the stand-in keeps 2 of its 26 layers, for smoke tests only)."""
    def __init__(self, dim:int=2304, length:int=128, device="cuda", encoder:bool=False):
        self.dim, self.length, self.device, self.pad, self.enc = dim, length, device, 256, None
        if encoder:
            from transformers import LlamaConfig, LlamaModel  # Gemma2-2B's shapes in a class with SDPA attention; same FLOPs
            c = LlamaConfig(hidden_size=dim, intermediate_size=9216, num_hidden_layers=26 if torch.device(device).type == "cuda" else 2,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000, attn_implementation="sdpa")
            with torch.device(device): self.enc = LlamaModel(c).to(torch.bfloat16).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, caps, bf16=True):
        n = len(caps); g = torch.Generator(device=self.device).manual_seed(0)
        if self.enc is not None: e = self.enc(input_ids=torch.randint(0, 256000, (n, self.pad), device=self.device, generator=g)).last_hidden_state.float()
        else: e = torch.randn(n, self.pad, self.dim, device=self.device, generator=g)
        lens = torch.randint(self.length // 2, self.length + 1, (n,), device=self.device, generator=g); lens[0] = self.length
        return e, torch.arange(self.pad, device=self.device)[None] < lens[:, None]


def captions(n:int, size:int)->list[str]:
    "Real Shapes training captions (canonical and paraphrased)."
    out = []
    for i in range(n):
        e = shapes_example(0, i, n, size); out += [e["caption"], *e["paraphrases"]]
    return out[:n]


@contextmanager
def precision_and_mask(device, bf16:bool, dense:bool):
    "bf16 autocast (when `bf16`) and, for the reference rows, the dense mask in every block."
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        if not dense:
            yield
            return
        with dense_mask():
            yield


def make_step(cfg, tower, caps, *, encode_every_step, pad_to, dense, attention, compile_, bf16, device, tower_ref=None, tread=0.0):
    "One training step: prx-nb's `train_step` (given what the flags say), then backward, clip and AdamW; returns step()."
    train, size = cfg.train, cfg.data.size
    bs = train.batch_size
    torch.manual_seed(0)
    torch._dynamo.reset()  # compiled code is cached per code object and does not guard on hooks: start clean
    model = build_denoiser(cfg.model.preset, device=device, context_in_dim=tower.dim)
    set_attention(model, attention)
    tricks = Tricks(model.train(), TricksConfig(tread=tread)) if tread else None  # PRX's routing: 2nd block to the penultimate
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas), eps=train.eps)
    fwd = torch.compile(model) if compile_ else model
    if hasattr(tower, "pipe"):  # pads as the step does
        tower.pipe.register_to_config(prompt_max_tokens=256 if pad_to == 256 else cfg.text.max_tokens)
    table, masks = tower.encode(caps[:bs], bf16=bf16)
    if pad_to == "trim":
        length = int(masks.sum(1).max())
        table, masks = table[:, :length], masks[:, :length]
    table, masks = table.to(device), masks.to(device)
    encoder = tower_ref if encode_every_step and tower_ref is not None else tower

    def text(ids):
        "The batch's text states: encoded anew every step (reference rows) or looked up in the cached table."
        if not encode_every_step: return table[ids].float(), masks[ids]
        e, m = encoder.encode(caps[:bs], bf16=bf16)
        return e.to(device), m.to(device)

    x0, ids = torch.rand(bs, 3, size, size, device=device) * 2 - 1, torch.arange(bs, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        loss, _ = train_step(fwd, tricks, x0, ids, text, cfg.flow, generator, train.caption_dropout,
                             autocast=lambda: precision_and_mask(device, bf16, dense))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def time_steps(step, steps:int, warmup:int, device)->float:
    "Seconds per step after `warmup` untimed steps."
    for _ in range(warmup): step()
    sync(device); t = time.perf_counter()
    for _ in range(steps): step()
    sync(device); return (time.perf_counter() - t) / steps


def data_time(cfg, tower, n:int=2048, batches:int=20)->float:
    "Seconds to draw one training batch from the prepared format with the training DataLoader settings."
    from prx_nb.data import build_shapes, prepare_dataset, PreparedData
    T, size = cfg.train, cfg.data.size
    with tempfile.TemporaryDirectory() as d:
        ds = build_shapes(Path(d) / "shapes", n=n, S=size, seed=0)
        prepare_dataset(ds, Path(d) / "prep", size, lambda c: tower.encode(c, bf16=True), caption_columns=cfg.data.caption_columns)
        dl = torch.utils.data.DataLoader(PreparedData(Path(d) / "prep"), batch_size=T.batch_size, shuffle=True, drop_last=True, num_workers=T.num_workers)
        it = iter(dl); next(it); t = time.perf_counter(); k = 0
        for _ in range(batches):
            try: next(it)
            except StopIteration: it = iter(dl); next(it)
            k += 1
        return (time.perf_counter() - t) / k


def loop_rate(preset:str, bs:int, steps:int=80)->float:
    "Images/s of the real `prx-nb train` loop (data loader, caption dropout, EMA, logging) on a small Shapes build."
    from prx_nb.train import train
    cfg = load_config(preset, overrides=[f"train.batch_size={bs}", f"train.max_steps={steps}", "train.max_minutes=null", "data.n=2048",
                                         "eval.every=0", "train.checkpoint_every=0", "train.log_every=10"])
    with tempfile.TemporaryDirectory() as d: return train(cfg, d, progress=False)["images_per_s"]  # steps after the 10th


LADDER = [  # (name, flags) each row adds one fast path to the one above
    ("reference: text encoded per step, padded to 256, dense mask, eager", dict(encode_every_step=True, pad_to=256, dense=True, attention="native", compile_=False)),
    ("+ cached text latents", dict(encode_every_step=False, pad_to=256, dense=True, attention="native", compile_=False)),
    ("+ padding trimmed to the longest prompt", dict(encode_every_step=False, pad_to="trim", dense=True, attention="native", compile_=False)),
    ("+ broadcast mask, attention backend for the device", dict(encode_every_step=False, pad_to="trim", dense=False, attention="auto", compile_=False)),
    ("+ torch.compile (the prx-nb step)", dict(encode_every_step=False, pad_to="trim", dense=False, attention="auto", compile_=True)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="shapes-cpu", help="a speedrun preset (model, batch size and resolution come from it)")
    ap.add_argument("--batch-size", type=int, help="override the preset's batch size")
    ap.add_argument("--steps", type=int, default=20); ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 row"); ap.add_argument("--no-data", action="store_true")
    ap.add_argument("--no-loop", action="store_true", help="skip timing the real training loop")
    ap.add_argument("--synthetic-text", type=int, metavar="LEN", help="offline: random text embeddings of the preset encoder's width, "
                    "prompts of at most LEN tokens; the reference row then runs a Gemma2-2B-sized encoder every step")
    ap.add_argument("--only-ours", action="store_true", help="time the prx-nb step (and extra rows) without the reference ladder")
    ap.add_argument("--tread", type=float, default=0.0, help="also time the prx-nb step with this TREAD routing fraction")
    ap.add_argument("--batch-sizes", help="also time the prx-nb step at these micro-batches (comma-separated) and report the largest that fits")
    ap.add_argument("--out", help="write the table as JSON here")
    a = ap.parse_args()
    cfg = load_config(a.preset, overrides=[f"train.batch_size={a.batch_size}"] if a.batch_size else [])
    bs, size, dev = cfg.train.batch_size, cfg.data.size, a.device
    sizes = [int(b) for b in a.batch_sizes.split(",")] if a.batch_sizes else []
    tower_ref = None
    if a.synthetic_text:
        from prx_nb.architecture import model_config
        dim = 2304 if "gemma" in cfg.text.encoder else model_config(cfg.model.preset)["context_in_dim"]
        tower = SyntheticText(dim, a.synthetic_text, dev); caps = [""] * max([bs, *sizes])
        a.no_loop = a.no_data = True
    else:
        tower = TextTower.load(cfg.text.encoder, cfg.text.max_tokens); tower.encoder.to(dev); caps = captions(max([bs, *sizes]), size)
    L = int(tower.encode(caps[:bs])[1].sum(1).max())
    fl = flops_per_image(cfg.model.preset, size, text_tokens=L, context_in_dim=tower.dim)
    n = 8192 if torch.device(dev).type == "cuda" else 4096
    peak16, peak32 = matmul_peak(torch.bfloat16, n, device=dev), matmul_peak(torch.float32, n, device=dev)
    print(f"preset {a.preset} on {dev} ({torch.get_num_threads()} threads), batch {bs}, {size}px, text {L} tokens (trimmed)")
    print(f"model FLOPs per image (train, fwd+bwd): {fl / 1e6:.1f} M | measured matmul peak: bf16 {peak16 / 1e12:.3f} TFLOP/s, fp32 {peak32 / 1e12:.3f} TFLOP/s\n")
    rows, ladder = [], [(n, dict(f, bf16=True)) for n, f in (LADDER[-1:] if a.only_ours else LADDER)]
    if a.tread: ladder.append((f"prx-nb step + TREAD {a.tread:.0%} (training trick)", dict(LADDER[-1][1], bf16=True, tread=a.tread)))
    if not a.no_fp32: ladder.append(("prx-nb step in fp32 (no bf16 autocast)", dict(LADDER[-1][1], bf16=False)))
    cuda = torch.device(dev).type == "cuda"
    for name, flags in ladder:
        if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        if a.synthetic_text and flags["encode_every_step"] and tower_ref is None: tower_ref = SyntheticText(tower.dim, a.synthetic_text, dev, encoder=True)
        s = time_steps(make_step(cfg, tower, caps, device=dev, tower_ref=tower_ref if flags["encode_every_step"] else None, **flags), a.steps, a.warmup, dev)
        if not flags["encode_every_step"] and tower_ref is not None: tower_ref.enc = None; tower_ref = None; torch.cuda.empty_cache() if cuda else None
        ips = bs / s; peak = peak16 if flags["bf16"] else peak32
        rows.append(dict(step=name, ms_per_step=round(1e3 * s, 1), images_per_s=round(ips, 1), tflops=round(ips * fl / 1e12, 4),
                         mfu=round(ips * fl / peak, 4), mfu_vs_bf16_peak=round(ips * fl / peak16, 4),
                         peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if cuda else None))
        print(f"{name:62s} {rows[-1]['ms_per_step']:9.1f} ms {ips:9.1f} img/s  MFU {100 * rows[-1]['mfu']:5.1f}%", flush=True)
    if not a.no_loop:
        ips = loop_rate(a.preset, bs); name = "the prx-nb train loop (data, dropout, EMA, logging)"
        rows.append(dict(step=name, ms_per_step=round(1e3 * bs / ips, 1), images_per_s=round(ips, 1), tflops=round(ips * fl / 1e12, 4),
                         mfu=round(ips * fl / peak16, 4), mfu_vs_bf16_peak=round(ips * fl / peak16, 4)))
        print(f"{name:62s} {rows[-1]['ms_per_step']:9.1f} ms {ips:9.1f} img/s  MFU {100 * rows[-1]['mfu']:5.1f}%", flush=True)
    ref, ours = rows[0], rows[0 if a.only_ours else len(LADDER) - 1]
    sweep = []
    for b in sizes:
        c2 = load_config(a.preset, overrides=[f"train.batch_size={b}"])
        try:
            if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            s = time_steps(make_step(c2, tower, caps, device=dev, **dict(LADDER[-1][1], bf16=True)), a.steps, a.warmup, dev)
            sweep.append(dict(batch=b, images_per_s=round(b / s, 1), mfu=round(b / s * fl / peak16, 4),
                              peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if cuda else None))
        except torch.OutOfMemoryError: sweep.append(dict(batch=b, oom=True))
        print(f"micro-batch {b}: {sweep[-1]}", flush=True)
    speedup = None if a.only_ours else ours["images_per_s"] / ref["images_per_s"]
    dt = None if a.no_data else data_time(cfg, tower)
    print("\n| step | ms/step | images/s | TFLOP/s | MFU (own-dtype peak) | peak GiB |\n|---|---|---|---|---|---|")
    for r in rows: print(f"| {r['step']} | {r['ms_per_step']} | {r['images_per_s']} | {r['tflops']} | {100 * r['mfu']:.1f}% | {r.get('peak_memory_gib')} |")
    if speedup: print(f"\nprx-nb step / reference step: {speedup:.1f}x faster; MFU {100 * ours['mfu']:.1f}% of the measured bf16 peak")
    if not a.no_loop: print(f"the full training loop: {rows[-1]['images_per_s']} images/s, MFU {100 * rows[-1]['mfu']:.1f}% of the measured bf16 peak")
    if dt is not None: print(f"data loader: {1e3 * dt:.1f} ms per batch against {ours['ms_per_step']} ms of compute ({100 * dt * 1e3 / ours['ms_per_step']:.1f}%)")
    res = dict(preset=a.preset, device=dev, threads=torch.get_num_threads(), torch=torch.__version__, batch_size=bs, size=size, text_tokens=L,
               flops_per_image=fl, peak_bf16=peak16, peak_fp32=peak32, rows=rows, speedup_vs_reference=speedup, mfu=ours["mfu"], loop_mfu=None if a.no_loop else rows[-1]["mfu"],
               data_ms_per_batch=None if dt is None else 1e3 * dt, batch_sweep=sweep, synthetic_text=a.synthetic_text,
               gpu=torch.cuda.get_device_name() if cuda else None)
    if a.out: Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__": main()
