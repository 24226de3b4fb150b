"The saved artifact is plain diffusers: it loads and samples in a process that never imports prx_nb."
import json, sys, textwrap
from conftest import BIN, run

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from diffusers import PRXPixelPipeline
    pipe = PRXPixelPipeline.from_pretrained(sys.argv[1])
    s = json.load(open(sys.argv[1] + "/sampling.json"))
    img = pipe("one red circle on a white background", height=s["size"], width=s["size"], num_inference_steps=3,
               guidance_scale=s["guidance_scale"], use_resolution_binning=False,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (s["size"], s["size"]), img.size
    assert pipe.scheduler.config.shift == s["shift"], (pipe.scheduler.config.shift, s["shift"])  # the judged sampler, in plain diffusers
    assert pipe.scheduler.config.stochastic_sampling == s["stochastic"], (pipe.scheduler.config, s)
    assert not any(m == "prx_nb" or m.startswith("prx_nb.") for m in sys.modules), "prx_nb was imported"
    print(json.dumps(dict(size=img.size, cls=type(pipe).__name__, encoder=type(pipe.text_encoder).__name__)))
''')


def test_pipeline_loads_without_prx_nb(tiny_run):
    r = run([sys.executable, "-c", SCRIPT, str(tiny_run / "pipeline")])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cls"] == "PRXPixelPipeline" and out["size"] == [32, 32]
    idx = json.loads((tiny_run / "pipeline" / "model_index.json").read_text())
    assert idx["transformer"] == ["diffusers", "PRXTransformer2DModel"] and idx["text_encoder"][0] == "transformers"


def test_pipeline_weights_are_the_ema(tiny_run):
    "The saved transformer equals the EMA stored in the last checkpoint when training ends on a checkpoint step."
    import torch
    from diffusers import PRXTransformer2DModel
    m = PRXTransformer2DModel.from_pretrained(str(tiny_run / "pipeline"), subfolder="transformer")
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_every_trick_still_saves_a_plain_pipeline(tmp_path):
    "A run with TREAD, REPA (a tiny local teacher), DINO perceptual, contrastive FM and Muon saves a pipeline diffusers loads alone."
    from transformers import Dinov2Config, Dinov2Model
    teacher = tmp_path / "teacher"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                             image_size=32)).save_pretrained(str(teacher))
    out = tmp_path / "run"
    run([str(BIN / "prx-nb"), "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "12", "model.depth=4",
         "tricks.tread=0.5", "tricks.repa=0.5", f"tricks.teacher={teacher}", "tricks.dino=0.01", "tricks.cfm=0.05", "train.optimizer=muon"])
    log = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    parts = [r for r in log if "loss_repa" in r]
    assert parts and {"loss_flow", "loss_repa", "loss_dino"} <= set(parts[-1])
    r = run([sys.executable, "-c", SCRIPT, str(out / "pipeline")])
    assert json.loads(r.stdout.strip().splitlines()[-1])["cls"] == "PRXPixelPipeline"
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(out / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not any("proj" in k and k.startswith("repa") for k in sd)  # the REPA projector is training-only
