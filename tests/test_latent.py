"Latent mode: a tiny AutoencoderKL as the image tower; the run saves a PRXPipeline that plain diffusers samples, and training continues from it."
import json, sys, textwrap
from pathlib import Path
import numpy as np
from conftest import BIN, run

PRX = str(BIN / "prx-nb")
TINY = ["eval.n_per_task=1", "eval.final_n_per_task=1", "train.compile=false", "model.patch_size=2"]

SAMPLE = textwrap.dedent('''
    import sys
    from diffusers import PRXPipeline
    pipe = PRXPipeline.from_pretrained(sys.argv[1])
    img = pipe("a large red circle in the center on a white background", height=32, width=32, num_inference_steps=2, guidance_scale=3.0,
               use_resolution_binning=False).images[0]
    assert not any(m == "prx_nb" or m.startswith("prx_nb.") for m in sys.modules), "prx_nb was imported"
    print(type(pipe.vae).__name__, img.size)
''')


def tiny_vae(path):
    from diffusers import AutoencoderKL
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5).save_pretrained(str(path))  # shift_factor None, as SD VAEs
    return path


def test_latent_run_saves_a_prx_pipeline_and_continues(tmp_path):
    vae, a, b = tiny_vae(tmp_path / "vae"), tmp_path / "a", tmp_path / "b"
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(a), "--max-steps", "4", f"model.vae={vae}", "eval.every=2", *TINY])
    prep = a / "data" / "prepared"
    info = json.loads((prep / "prepared.json").read_text())  # encoded once, in the prepared data
    assert info["latent"] and info["latent_shapes"] == {"32x32": [4, 16, 16]}
    from prx_nb.data import PreparedData
    assert PreparedData(prep)[0][0].shape == (4, 16, 16)
    assert json.loads((a / "pipeline" / "model_index.json").read_text())["_class_name"] == "PRXPipeline"
    ev = [r for r in map(json.loads, (a / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "eval"]
    assert [e["step"] for e in ev] == [2, 4]  # ShapesEval ran through the VAE's decoder during training
    r = run([sys.executable, "-c", SAMPLE, str(a / "pipeline")])
    assert r.stdout.split()[0] == "AutoencoderKL" and "(32, 32)" in r.stdout
    # continue from the saved latent pipeline: its own VAE and text encoder
    run([PRX, "train", "--preset", "shapes-tiny", "--out", str(b), "--max-steps", "2", f"model.init={a / 'pipeline'}", "text.encoder=init",
         "eval.every=0", "train.compile=false"])
    assert json.loads((b / "pipeline" / "model_index.json").read_text())["_class_name"] == "PRXPipeline"


def test_latent_mode_errors_name_the_fix(tmp_path):
    vae = tiny_vae(tmp_path / "vae")
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "x"), f"model.vae={vae}", "flow.prediction=x", *TINY], check=False)
    assert r.returncode == 2 and "flow.prediction=velocity" in r.stderr
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "y"), f"model.vae={vae}", "tricks.repa=0.5", *TINY], check=False)
    assert r.returncode == 2 and "latent" in r.stderr
    r = run([PRX, "train", "--preset", "shapes-tiny", "--out", str(tmp_path / "z"), f"model.vae={tmp_path / 'missing'}", *TINY], check=False)
    assert r.returncode == 2 and "save_pretrained" in r.stderr
