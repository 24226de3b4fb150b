"Real image-caption data through datasets: parquet, webdataset tars, save_to_disk, caption mixing, bad rows, prepare."
import io, json, random, tarfile
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from prx_nb.data import (load_image_text, clean_rows, undecoded, caption_options, pick_caption, BadDataReport, BadSample,
                         check_columns, prepare_dataset, PreparedData)


def png(color, size=(20, 12)):
    b = io.BytesIO(); Image.new("RGB", size, color).save(b, format="PNG"); return b.getvalue()


def rows():
    return [dict(image={"bytes": png("red"), "path": "a.png"}, prompt="red", enhanced_prompt="a red image"),
            dict(image={"bytes": b"garbage", "path": "b.png"}, prompt="broken", enhanced_prompt="broken image"),
            dict(image={"bytes": png("blue"), "path": "c.png"}, prompt="  ", enhanced_prompt=None),
            dict(image={"bytes": png("lime"), "path": "d.png"}, prompt="green", enhanced_prompt="")]


def test_parquet_by_dir_and_file(tmp_path):
    import datasets
    ds = datasets.Dataset.from_list(rows(), features=datasets.Features(image=datasets.Image(), prompt=datasets.Value("string"),
                                                                        enhanced_prompt=datasets.Value("string")))
    ds.to_parquet(str(tmp_path / "part-0.parquet"))
    for src in (tmp_path, tmp_path / "part-0.parquet"):
        d = load_image_text(str(src)); rep = BadDataReport()
        good = list(clean_rows(undecoded(d, "image"), "image", {"prompt": .5, "enhanced_prompt": .5}, 8, rep))
        assert [g[0][0, 0].tolist() for g in good] == [[255, 0, 0], [0, 255, 0]]
        assert good[1][1] == [("green", 1.0)]  # the empty enhanced_prompt gives its weight to prompt
        assert rep.counts == {"unreadable_image": 1, "empty_caption": 1}


def test_webdataset_tars(tmp_path):
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tf:
        for i, c in enumerate(["red", "blue"]):
            for ext, data in (("png", png(c)), ("txt", f"a {c} image".encode())):
                ti = tarfile.TarInfo(f"{i:04d}.{ext}"); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    d = load_image_text(str(tmp_path)); rep = BadDataReport()
    good = list(clean_rows(undecoded(d, "png"), "png", {"txt": 1.0}, 8, rep))
    assert [g[1][0][0] for g in good] == ["a red image", "a blue image"] and rep.total == 0


def test_save_to_disk_and_prepare(tmp_path):
    import datasets, torch
    ds = datasets.Dataset.from_list([r for r in rows() if r["prompt"] == "red"] * 3)
    ds.save_to_disk(str(tmp_path / "disk"))
    d = load_image_text(str(tmp_path / "disk")); assert len(d) == 3
    enc = lambda ps: (torch.ones(len(ps), 4, 2), torch.ones(len(ps), 4, dtype=torch.bool))
    info = prepare_dataset(d, tmp_path / "prep", 8, enc, caption_columns={"prompt": .5, "enhanced_prompt": .5})
    assert info["n"] == 3 and info["captions"] == 6 and info["bad"]["total"] == 0  # two a row, stored with it
    p = PreparedData(tmp_path / "prep"); x, states = p[0]
    assert x.shape == (3, 8, 8) and states.shape == (4, 2) and p.caption(0) == "red"


def test_missing_column_names_the_fix():
    with pytest.raises(ValueError) as e: check_columns(["img", "text"], "image", {"caption": 1.0})
    msg = str(e.value)
    for s in ("image", "caption", "img", "text", "data.image_column", "data.caption_columns"): assert s in msg


def test_caption_mix_frequencies():
    opts = caption_options(dict(a="x", b=["y", "z", ""]), {"a": .5, "b": .5})
    assert opts == [("x", .5), ("y", .25), ("z", .25)]
    captions, weights = [c for c, _ in opts], np.array([w for _, w in opts])
    rng = np.random.default_rng(0)
    draws = [pick_caption(captions, weights, rng) for _ in range(4000)]
    assert abs(draws.count("x") / 4000 - .5) < .03 and abs(draws.count("z") / 4000 - .25) < .03
    with pytest.raises(BadSample): caption_options(dict(a=" ", b=[]), {"a": 1, "b": 1})


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="nope"): load_image_text("./nope/data")


def test_train_with_aspect_buckets_and_resume_exactly(tmp_path):
    "Non-square data in aspect-ratio buckets: one shape per batch, and a resumed run equals an uninterrupted one."
    import datasets, torch
    from conftest import BIN, run
    from diffusers import PRXTransformer2DModel
    sizes = [(64, 32), (32, 64), (48, 48)] * 4; colors = ["red", "blue", "lime", "yellow"] * 3
    ds = datasets.Dataset.from_list([dict(image={"bytes": png(c, wh), "path": f"{i}.png"}, prompt=f"a {c} picture")
                                     for i, (wh, c) in enumerate(zip(sizes, colors))], features=datasets.Features(image=datasets.Image(), prompt=datasets.Value("string")))
    (tmp_path / "src").mkdir(); ds.to_parquet(str(tmp_path / "src" / "part-0.parquet"))
    prx = str(BIN / "prx-nb")
    common = ["--preset", "shapes-tiny", f"data.source={tmp_path / 'src'}", "data.caption_columns={prompt: 1.0}", "data.buckets=[0.5, 1.0, 2.0]",
              "train.batch_size=2", "train.cooldown=0", "eval.every=0", "train.mixed_precision=no", "train.compile=false", "--checkpoint-every", "5"]
    run([prx, "train", "--out", str(tmp_path / "full"), "--max-steps", "9", *common])  # 6 batches an epoch: into the second
    prep = tmp_path / "full" / "data" / "prepared"
    data = PreparedData(prep)
    assert sorted({tuple(data[i][0].shape[1:]) for i in range(len(data))}) == [(24, 44), (32, 32), (44, 24)]
    run([prx, "train", "--out", str(tmp_path / "split"), "--max-steps", "5", *common])
    run([prx, "train", "--out", str(tmp_path / "split"), "--max-steps", "9", "--resume", "latest", *common])
    w = [PRXTransformer2DModel.from_pretrained(str(tmp_path / r / "pipeline"), subfolder="transformer").state_dict() for r in ("full", "split")]
    for k in w[0]: torch.testing.assert_close(w[1][k], w[0][k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_source_mixture_trains_and_resumes_exactly(tmp_path):
    "data.sources: two datasets with their own caption columns, drawn 0.7/0.3; a resumed run equals an uninterrupted one."
    import datasets, torch
    from conftest import BIN, run
    from diffusers import PRXTransformer2DModel
    from prx_nb.data import PreparedData
    for name, color, column in (("a", "red", "prompt"), ("b", "blue", "text")):
        rows = [dict(image={"bytes": png(color, (40, 40)), "path": f"{i}.png"}, **{column: f"a {color} picture number {i}"}) for i in range(24)]
        datasets.Dataset.from_list(rows, features=datasets.Features(image=datasets.Image(), **{column: datasets.Value("string")})).save_to_disk(str(tmp_path / name))
    sources = (f"data.sources=[{{source: {tmp_path / 'a'}, weight: 0.7, caption_columns: {{prompt: 1.0}}}}, "
               f"{{source: {tmp_path / 'b'}, weight: 0.3, caption_columns: {{text: 1.0}}}}]")
    common = ["--preset", "shapes-tiny", "data.source=mixture", sources, "text.encoder=words", "train.batch_size=4", "train.cooldown=0",
              "eval.every=0", "train.mixed_precision=no", "--checkpoint-every", "4"]
    prx = str(BIN / "prx-nb")
    run([prx, "train", "--out", str(tmp_path / "full"), "--max-steps", "8", *common])
    data = PreparedData(sorted((tmp_path / "full" / "data").glob("source-*/prepared")))
    assert data.sizes == [24, 24] and data.caption(0) == "a red picture number 0" and data.caption(24) == "a blue picture number 0"
    run([prx, "train", "--out", str(tmp_path / "split"), "--max-steps", "4", *common])
    run([prx, "train", "--out", str(tmp_path / "split"), "--max-steps", "8", "--resume", "latest", *common])
    w = [PRXTransformer2DModel.from_pretrained(str(tmp_path / r / "pipeline"), subfolder="transformer").state_dict() for r in ("full", "split")]
    for k in w[0]: torch.testing.assert_close(w[1][k], w[0][k], rtol=1e-5, atol=1e-6, msg=k)
