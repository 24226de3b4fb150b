"""The training format at scale: memory of training against the dataset's size, and the image codecs.

    python bench/data_scale.py memory --rows 2000 20000 --out runs/data-scale
    python bench/data_scale.py codecs

`memory` prepares N rows of the same kind (64-px Shapes scenes, two captions a row, the long one about 50 words) with
the word tower (128-d, text.max_tokens=64), trains the tiny denoiser on them for a few steps with two DataLoader
workers, and samples the memory of the whole process tree (the main process and its workers) every 20 ms: the peak of
the sum of proportional anonymous memory (Pss_Anon: what the run allocated, a page the forked workers share counted
once) and of all proportional memory (Pss, also the pages of the memory-mapped rows it touched). `codecs` stores the
bundled real photographs (scikit-learn's and scikit-image's) at 512 px in each format, and 32-px Shapes scenes raw and
as PNG: bytes, decode time on one core, PSNR. The data chapter prints the stored results.
"""
import argparse, io, json, os, shutil, subprocess, sys, threading, time
from pathlib import Path
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tree_memory(pid: int) -> tuple[int, int]:
    "(anonymous, all) proportional resident memory in bytes (Pss_Anon, Pss), summed over a process and its descendants."
    import psutil
    anon = total = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:  # proportional: a page shared by the forked workers is counted once, split among them
        try:
            rollup = Path(f"/proc/{p.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:] if ":" in line)
        anon += int(fields.get("Pss_Anon", "0 kB").split()[0]) * 1024
        total += int(fields.get("Pss", "0 kB").split()[0]) * 1024
    return anon, total


def peak_memory(cmd: list, env: dict) -> dict:
    "Run `cmd`, sampling its process tree's memory; the peaks and the wall time."
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks, t0 = [0, 0], time.time()
    def watch():
        while proc.poll() is None:
            anon, rss = _tree_memory(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], anon), max(peaks[1], rss)
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True); thread.start()
    out = proc.communicate()[0]; thread.join()
    if proc.returncode:
        raise SystemExit(out[-3000:])
    return dict(peak_pss_anon_mb=round(peaks[0] / 2**20), peak_pss_mb=round(peaks[1] / 2**20), wall_s=round(time.time() - t0, 1))


def shapes_rows(n: int, folder: Path) -> Path:
    "A parquet source of n 64-px Shapes scenes: `prompt` (canonical) and `enhanced_prompt` (about 50 words)."
    import datasets
    from prx_nb.data import shapes_example
    def rows():
        for i in range(n):
            e = shapes_example(0, i, n, 64)
            long = " ".join([e["caption"], *e["paraphrases"], "on a plain canvas, drawn flat with no shading,", e["caption"]])
            b = io.BytesIO(); e["image"].save(b, format="PNG")
            yield dict(image={"bytes": b.getvalue(), "path": None}, prompt=e["caption"], enhanced_prompt=long)
    features = datasets.Features(image=datasets.Image(), prompt=datasets.Value("string"), enhanced_prompt=datasets.Value("string"))
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_generator(rows, features=features).to_parquet(str(folder / "part-0.parquet"))
    return folder


def memory(a):
    prx = a.prx.split() if a.prx else [str(Path(sys.executable).parent / "prx-nb")]  # e.g. "python -m prx_nb" for another copy
    rows = []
    for n in a.rows:
        src, out = shapes_rows(n, Path(a.out) / f"src-{n}"), Path(a.out) / f"run-{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*prx, "train", "--preset", "shapes-tiny", "--out", str(out), "--max-steps", str(a.steps),
               f"data.source={src}", "data.n=null", "data.size=64", "data.caption_columns={prompt: 0.5, enhanced_prompt: 0.5}",
               "text.encoder=words", "text.max_tokens=64", "train.num_workers=2", "train.batch_size=32", "eval.every=0",
               "train.mixed_precision=no", "train.checkpoint_every=1000"]
        prep = peak_memory(cmd, dict(os.environ))  # preparation, then training
        info = json.loads((out / "data" / "prepared" / "prepared.json").read_text())
        info.setdefault("image_bytes", 0); info.setdefault("text_bytes", 0)  # an older prx-nb did not record them
        train_only = peak_memory(cmd + ["--resume", "latest", "--max-steps", str(2 * a.steps)], dict(os.environ))
        rows.append(dict(rows=n, prepare_and_train=prep, train=train_only, image_bytes=round(info["image_bytes"]),
                         text_bytes_per_caption=round(info["text_bytes"]), text_tokens=info["text_tokens"],
                         disk_mb=round(sum(f.stat().st_size for f in (out / "data" / "prepared").rglob("*")) / 2**20, 1)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _photos(size: int) -> list:
    "The bundled photographs (the eval chapter's `photo_dataset`) center-cropped to `size`."
    from prx_nb.data import center_crop_resize
    from prx_nb.eval import photo_dataset
    return [center_crop_resize(im, size) for im in photo_dataset(max_side=max(size, 512))["image"]]


def _decode_rate(blobs: list, fmt: str, shape: tuple, reps: int = 20) -> tuple[float, list]:
    "Seconds per image to decode `blobs` on this core, and the decoded images."
    from prx_nb.data import decode_pixels
    t0 = time.perf_counter()
    for _ in range(reps):
        decoded = [decode_pixels(b, fmt, shape) for b in blobs]
    return (time.perf_counter() - t0) / reps / len(blobs), decoded


def _codec_rows(images: list, settings: list, what: str) -> list:
    from prx_nb.data import encode_image
    rows = []
    for fmt, q in settings:
        blobs = [encode_image(p, fmt, q) for p in images]
        dt, decoded = _decode_rate(blobs, fmt, images[0].shape[:2])
        mse = np.mean([np.mean((d.astype(float) - p.astype(float)) ** 2) for d, p in zip(decoded, images)])
        rows.append(dict(images=what, format=fmt, quality=q if fmt in ("webp", "jpeg") else None,
                         kb_per_image=round(np.mean(list(map(len, blobs))) / 1024, 2), decode_ms=round(dt * 1e3, 3),
                         images_per_s_per_core=round(1 / dt), psnr_db=round(10 * np.log10(255**2 / mse), 1) if mse else None))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def codecs(a):
    "Photographs at `a.size` in every format and quality; 32-px Shapes scenes raw and as PNG."
    from prx_nb.data import shapes_example
    photos = _photos(a.size)
    settings = [("png", None), ("webp", 80), ("webp", 90), ("webp", 95), ("jpeg", 85), ("jpeg", 90), ("jpeg", 95)]
    rows = _codec_rows(photos, settings, f"{len(photos)} photographs, {a.size} px")
    scenes = [np.asarray(shapes_example(0, i, 256, 32)["image"]) for i in range(256)]
    rows += _codec_rows(scenes, [("raw", None), ("png", None)], "256 Shapes scenes, 32 px")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("memory", "codecs"))
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 20000]); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512); ap.add_argument("--out", default="runs/data-scale")
    ap.add_argument("--prx", default=None, help="the command that runs prx-nb (default: this environment's prx-nb)")
    a = ap.parse_args()
    result = dict(memory=memory, codecs=codecs)[a.what](a)
    Path(a.out).mkdir(parents=True, exist_ok=True); (Path(a.out) / f"{a.what}.json").write_text(json.dumps(result, indent=1))
