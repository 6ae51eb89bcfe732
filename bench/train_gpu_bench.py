"""Training on a GPU: the data pipeline against the model, measured side by side in one run (issue #2).

  (a) head mode: backbone feature extraction images/s over the data pipeline's decode ceiling (the same loader,
      decode + eval transform, with no model behind it); goal >= 0.8
  (b) fine-tuning images/s in the steady epochs (ResNet-50, 224 px, batch 256, bf16, channels_last) with the images
      decoded once into GPU memory (--image-cache memory); goal >= 3,900. For comparison the same run decoding
      every epoch in loader workers (--image-cache off) and, with --compile, torch.compile on top.

    python bench/train_gpu_bench.py                      # generates a photo-sized synthetic set first
    python bench/train_gpu_bench.py --data data/dogImages

Figures go to build/bench/train_gpu_bench.json (or --json).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import torch

import preprocessing
from architectures import build_model
from training import synthetic
from training.feature_cache import extract_features
from training.imagefolder_data import ImageSamples, collate_skipping_bad, scan_data

TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"


def decode_ceiling(samples, args):
    """images/s of the loader alone: decode, eval transform, collate, pinned like training's."""
    dataset = ImageSamples(samples, preprocessing.eval_transform(args.image_size),
                           min_side=preprocessing.decode_side(args.image_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                         collate_fn=collate_skipping_bad, pin_memory=args.device == "cuda")
    started, count = time.perf_counter(), 0
    for images, _, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - started)


def extraction(samples, backbone, args):
    """images/s of head mode's feature extraction (train.py's own function) over the same images."""
    device = torch.device(args.device)
    started = time.perf_counter()
    features, _, _ = extract_features(
        backbone, samples, list(range(len(samples))), image_size=args.image_size, batch_size=args.batch_size,
        num_workers=args.workers, device=device,
        autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16) if args.device == "cuda" else nullcontext(),
        channels_last=args.device == "cuda", should_stop=lambda: False, progress_label=None)
    return len(features) / (time.perf_counter() - started)


def head_mode(data, args):
    samples = data.splits["train"].samples
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    backbone = build_model(args.arch, len(data.class_names), "none").backbone.to(args.device).eval()
    if args.device == "cuda":
        backbone.to(memory_format=torch.channels_last)
    ceilings, extractions = [], []
    for _ in range(args.repeats):      # alternated, so both see the same machine and file cache
        ceilings.append(decode_ceiling(samples, args))
        extractions.append(extraction(samples, backbone, args))
        print(f"  decode ceiling {ceilings[-1]:.0f} img/s, feature extraction {extractions[-1]:.0f} img/s",
              flush=True)
    best_ceiling, best_extraction = max(ceilings), max(extractions)
    return {"images": len(samples), "loader_workers": args.workers, "decode_ceiling_img_s": round(best_ceiling),
            "feature_extraction_img_s": round(best_extraction), "ratio": round(best_extraction / best_ceiling, 3),
            "goal": ">= 0.8", "all_ceilings": [round(v) for v in ceilings],
            "all_extractions": [round(v) for v in extractions]}


def model_ceiling(num_classes, args, steps=30):
    """images/s of fine-tuning steps on random tensors already on the device: the model's own limit, with the
    settings train.py uses (bf16 autocast, channels_last, fused AdamW), and no data pipeline at all."""
    device = torch.device(args.device)
    cuda = args.device == "cuda"
    torch.backends.cudnn.benchmark = cuda
    model = build_model(args.arch, num_classes, "none").to(device).train()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (args.batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext():
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return round(steps * args.batch_size / (time.perf_counter() - started))


def finetune(data_dir, work, name, args, *extra):
    out = work / name
    flags = ["--data", str(data_dir), "--arch", args.arch, "--weights", "none", "--mode", "finetune",
             "--epochs", str(args.epochs), "--patience", "0", "--image-size", str(args.image_size),
             "--batch-size", str(args.batch_size), "--num-workers", str(args.workers), "--device", args.device,
             "--model-dir", str(out / "model"), "--output-dir", str(out / "out"), "--checkpoint-dir",
             str(out / "ck"), "--no-resume", *extra]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *flags], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"failed": (result.stdout[-1500:] + result.stderr[-1500:])}
    report = json.loads((out / "out" / "metrics.json").read_text())
    rates = [row["images_per_second"] for row in report["history"]]
    steady = rates[1:] or rates
    return {"flags": " ".join(extra), "image_cache": report["settings"]["image_cache"],
            "train_img_s_per_epoch": rates, "steady_img_s": round(statistics.median(steady)),
            "image_decode_seconds": report.get("image_decode_seconds"), "wall_s": round(wall, 1),
            "final_test_accuracy": report["final"].get("test_accuracy")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder set (default: a generated one with photo-sized JPEGs)")
    parser.add_argument("--source-size", type=int, default=448, help="side of the generated JPEGs")
    parser.add_argument("--train-per-class", type=int, default=1500, help="generated training images per class")
    parser.add_argument("--arch", default="resnet50", help="backbone")
    parser.add_argument("--image-size", type=int, default=224, help="input size")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per run (the first is warm-up)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="loader workers")
    parser.add_argument("--repeats", type=int, default=2, help="alternated ceiling/extraction measurements")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--compile", action="store_true", help="also fine-tune with torch.compile")
    parser.add_argument("--skip", choices=("head", "finetune", "finetune-off"), action="append", default=[],
                        help="skip a part")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "build" / "bench" / "train_gpu_bench.json",
                        help="where the figures are written")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.data is None:
        args.data = synthetic.make_synthetic_dataset(
            REPO_ROOT / "build" / "bench" / f"photo-shapes-{args.source_size}",
            split_sizes={"train": args.train_per_class, "valid": 50, "test": 50}, image_size=args.source_size,
            workers=os.cpu_count() or 1, progress=sys.stderr.isatty())
    data = scan_data(args.data)
    results = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "device": args.device,
                           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
               "settings": {k: str(v) for k, v in vars(args).items() if k != "json"},
               "data": {name: len(split) for name, split in data.splits.items()},
               "data_ready_s": round(time.perf_counter() - started, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def report(part, figures):     # written after each part, so a run cut short keeps what it measured
        results[part] = figures
        print(json.dumps({part: figures}, indent=2), flush=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")

    print(json.dumps(results, indent=2), flush=True)
    if "head" not in args.skip:
        report("head_mode", head_mode(data, args))
    with tempfile.TemporaryDirectory(prefix="train-gpu-bench-") as tmp:
        work = Path(tmp)
        if "finetune" not in args.skip:
            ceiling = model_ceiling(len(data.class_names), args)
            in_memory = finetune(args.data, work, "in_memory", args, "--image-cache", "auto")
            report("finetune_in_memory", {**in_memory, "goal": "steady_img_s >= 3900",
                                          "model_only_img_s": ceiling,
                                          "share_of_model_only": round(in_memory.get("steady_img_s", 0) / ceiling, 3)})
        if "finetune-off" not in args.skip:
            report("finetune_decode_every_epoch", finetune(args.data, work, "off", args, "--image-cache", "off"))
        if args.compile:
            report("finetune_in_memory_compiled",
                   finetune(args.data, work, "compiled", args, "--image-cache", "memory", "--compile"))
    print(f"figures written to {args.json} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
