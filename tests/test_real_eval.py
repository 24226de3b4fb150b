"Held-out real-image metrics offline: tiny random metric networks, scikit-image's photographs (plumbing, not quality)."
import sys, threading
import numpy as np, pytest, torch
from PIL import Image, ImageFilter
from tiny_metric_models import tiny_clip, tiny_dino, tiny_inception_weights

from prx_nb.data import load_image_text
from prx_nb.eval import (HELDOUT_METRICS, CLIPFeatures, InceptionFeatures, VisionFeatures, clip_score, gather_rows,
                         heldout_eval, heldout_extractors, heldout_set, photo_dataset)

S = 64
CHEAP = ["cmmd-heldout", "clip-heldout", "dino-mmd-heldout"]  # all but FID: InceptionV3 is the slow one on a CPU


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("metric-nets")
    return dict(inception_weights=str(tiny_inception_weights(d / "inception.pth")),
                clip_model=str(tiny_clip(d / "clip")), dino_model=str(tiny_dino(d / "dino")))


@pytest.fixture(scope="module")
def nets(models):
    return heldout_extractors(**models)


@pytest.fixture(scope="module")
def photos():
    return photo_dataset()


@pytest.fixture(scope="module")
def real(photos):
    return heldout_set(photos, S)


def same(real):
    by_caption = dict(zip(real["captions"], real["images"]))
    return lambda prompts, seeds: [by_caption[p] for p in prompts]


def blurred(real, radius=4):
    by_caption = dict(zip(real["captions"], real["images"]))
    return lambda prompts, seeds: [np.asarray(Image.fromarray(by_caption[p]).filter(ImageFilter.GaussianBlur(radius)))
                                   for p in prompts]


def noise(prompts, seeds):
    return [np.random.default_rng(s).integers(0, 256, (S, S, 3), dtype=np.uint8) for s in seeds]


def test_photo_set_in_memory_on_disk_and_streamed(photos, real, tmp_path):
    assert len(photos) >= 17 and photos.column_names == ["image", "caption", "name"]
    assert len(set(photos["caption"])) == len(photos) and all(c.strip() for c in photos["caption"])
    assert real["images"].shape == (len(photos), S, S, 3) and real["images"].dtype == np.uint8
    photo_dataset(tmp_path / "photos")
    assert heldout_set(load_image_text(str(tmp_path / "photos")), S)["key"] == real["key"]
    assert heldout_set(photos.to_iterable_dataset(), S, n=5)["captions"] == real["captions"][:5]
    pairs = [(np.asarray(r["image"]), r["caption"]) for r in photos]
    assert heldout_set(pairs, S)["key"] == real["key"]
    assert heldout_set(pairs[:-1], S)["key"] != real["key"] and heldout_set(photos, 32)["key"] != real["key"]


def test_missing_scikit_image_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        photo_dataset()


def test_offline_without_weights_names_what_to_fetch(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=InceptionFeatures.FILE):
        InceptionFeatures(str(tmp_path / "nothing.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=InceptionFeatures.FILE) as e:
        InceptionFeatures()
    assert InceptionFeatures.URL in str(e.value)
    for name in ("openai/clip-vit-large-patch14-336", str(tmp_path / "no-clip")):
        with pytest.raises(OSError, match="save_pretrained") as e:
            CLIPFeatures(name)
        assert name in str(e.value)
    with pytest.raises(OSError, match="save_pretrained") as e:
        VisionFeatures.load("facebook/dinov2-with-registers-large")
    assert "facebook/dinov2-with-registers-large" in str(e.value)


def test_heldout_metrics_finite_zero_on_itself_and_ordered(real, nets, tmp_path):
    cache = tmp_path / "cache"
    itself, images = heldout_eval(same(real), real, nets, cache=cache)
    far, _ = heldout_eval(noise, real, nets, cache=cache)
    assert set(itself) == set(far) == set(HELDOUT_METRICS)
    assert all(np.isfinite(v) for r in (itself, far) for v in r.values())
    for m in ("fid-heldout", "cmmd-heldout", "dino-mmd-heldout"):
        assert abs(itself[m]) < 1e-6 * far[m] and far[m] > 0, m
    assert 0 <= itself["clip-heldout"] <= 100
    assert itself["clip-heldout"] == pytest.approx(clip_score(real["images"], real["captions"], nets["clip"]), abs=1e-4)
    np.testing.assert_array_equal(np.stack(images), real["images"])
    near, _ = heldout_eval(blurred(real), real, nets, CHEAP, cache=cache)
    for m in ("cmmd-heldout", "dino-mmd-heldout"):
        assert itself[m] < near[m] < far[m], m
    assert len(list((cache / "reference").glob("*.pt"))) == 3  # the real set's features, once per network


def on_threads(world, fn):
    "fn(rank, gather) on `world` threads joined by a thread all_gather (tensors concatenated in rank order)."
    slots, barrier, out = [None] * world, threading.Barrier(world), [None] * world

    def gather(rank, t):
        slots[rank] = t
        barrier.wait()
        res = torch.cat(slots)
        barrier.wait()
        return res

    def run(rank):
        out[rank] = fn(rank, lambda t: gather(rank, t))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_gather_rows_puts_every_rank_back_in_caption_order():
    n, world = 7, 3
    feats = torch.arange(3.0 * n).view(n, 3)
    for got in on_threads(world, lambda r, g: gather_rows(feats[r::world], list(range(r, n, world)), n, world, g)):
        torch.testing.assert_close(got, feats)


def test_split_over_three_ranks_equals_one_process(real, nets, tmp_path):
    gen = blurred(real, 2)
    one, images = heldout_eval(gen, real, nets, CHEAP, cache=tmp_path)
    three = on_threads(3, lambda r, g: heldout_eval(gen, real, nets, CHEAP, rank=r, world=3, gather=g, cache=tmp_path))
    for r, (res, imgs) in enumerate(three):
        assert res == pytest.approx(one, rel=1e-5, abs=1e-6)
        np.testing.assert_array_equal(np.stack(imgs), np.stack(images[r::3]))
    with pytest.raises(ValueError, match="gather"):
        heldout_eval(gen, real, nets, CHEAP, rank=0, world=3)


def _gloo_worker(rank, world, init, real, models, out):
    "One rank of a gloo process group: its share of the held-out evaluation, saved to out/rank-R.pt."
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)

    def gather(t):
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    nets = heldout_extractors(CHEAP, clip_model=models["clip_model"], dino_model=models["dino_model"])
    res = heldout_eval(blurred(real, 2), real, nets, CHEAP, rank=rank, world=world, gather=gather, cache=out / "cache")
    torch.save(res, out / f"rank-{rank}.pt")
    dist.destroy_process_group()


def test_split_over_two_gloo_processes_equals_one_process(real, nets, models, tmp_path):
    import torch.multiprocessing as mp

    one, images = heldout_eval(blurred(real, 2), real, nets, CHEAP, cache=tmp_path / "cache")
    init = f"file://{tmp_path / 'rendezvous'}"
    args = (2, init, real, models, tmp_path)
    mp.start_processes(_gloo_worker, args=args, nprocs=2, start_method="fork")  # fork: no second import of prx_nb
    for r in range(2):
        res, imgs = torch.load(tmp_path / f"rank-{r}.pt", weights_only=False)
        assert res == pytest.approx(one, rel=1e-5, abs=1e-6)
        np.testing.assert_array_equal(np.stack(imgs), np.stack(images[r::2]))


def test_train_on_photos_logs_heldout_curves(models, tmp_path):
    "`prx-nb train` on 13 of the photographs, judged every 2 steps against the other 6: FID, CMMD, CLIP score and "
    "DINO-MMD logged at each evaluation, and drawn by `plot_curves`."
    import json, os
    from conftest import BIN, run
    from prx_nb.eval import plot_curves
    ds = photo_dataset()
    ds.select(range(13)).save_to_disk(str(tmp_path / "train")); ds.select(range(13, len(ds))).save_to_disk(str(tmp_path / "heldout"))
    out = tmp_path / "run"
    run([str(BIN / "prx-nb"), "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", "4",
         f"data.source={tmp_path / 'train'}", "data.caption_columns={caption: 1.0}", "text.encoder=words", "train.batch_size=4",
         "train.mixed_precision=no", "eval.every=2", "eval.steps=2", f"eval.metrics=[{', '.join(HELDOUT_METRICS)}]",
         f"eval.heldout={tmp_path / 'heldout'}", f"eval.inception_weights={models['inception_weights']}",
         f"eval.clip_model={models['clip_model']}", f"eval.dino_model={models['dino_model']}"],
        env=dict(os.environ, PRX_NB_CACHE=str(tmp_path / "cache")))
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "eval"]
    assert [e["step"] for e in evals] == [2, 4] and all(np.isfinite(e[m]) for e in evals for m in HELDOUT_METRICS)
    assert not any("shapes" in e for e in evals)  # no ShapesEval for a model of photographs
    titles = [ax.get_title() for ax in plot_curves(out).axes]
    assert titles == ["training loss (velocity MSE)", "fid-heldout (lower is better)", "cmmd-heldout (lower is better)",
                      "clip-heldout (higher is better)", "dino-mmd-heldout (lower is better)"]
