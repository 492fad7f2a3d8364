"""Semantic manipulation on real MNIST, offline: train a small Glow on ``mnist_idx`` briefly (or
take a checkpoint), compute attribute directions, and write the edit grids to ``docs/images/``.

    OMP_NUM_THREADS=1 python scripts/make_manipulation_figure.py [--minutes 3] [--ckpt RUN/checkpoints/best.ckpt]

Attributes (over the 8,550 training images of ``mnist_idx``: the first 9,000 of the MNIST test set
minus the 5 % validation hold-out):

* ``class:7``: the digit is a 7, against every other digit;
* ``mass:T``: thick against thin strokes. An image's pixel mass is its mean pixel value divided by
  the largest value (31 at 5 bits); ``T`` is the median mass of the training images (0.129), so half
  of them are "thick".

Figures (rows: 8 test images, the first 4 without the attribute and the last 4 with it; columns:
alpha = -1, -2/3, ..., 1, the middle one the unedited reconstruction):

* ``manipulate_digit7.png``: ``class:7`` on every level;
* ``manipulate_digit7_top.png``: ``class:7`` on the top (coarse) level only;
* ``manipulate_thickness.png``: ``mass:T`` on every level.

Each step prints the ``sample.py`` command that does the same from the shell. The training uses
``experiment=mnist_idx_glow`` made smaller (depth 8, 64 hidden channels), at 5 bits with additive
couplings (the official Glow code's default), stopped by ``trainer.max_time``; the whole script takes
about ``--minutes`` plus 1.5 minutes on one core. At 8 bits with affine couplings, a model trained
this briefly has an inverse that overflows just off the data (latents moved by 0.1 per coordinate
already decode to inf): most edited images were NaN.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "logs" / "manipulation"
TRAIN = ["experiment=mnist_idx_glow", "data.n_bits=5", "model.coupling=additive", "model.depth=8",
         "model.hidden_channels=64", "module.warmup_steps=50",
         "trainer=cpu", "trainer.max_epochs=1000", "logger=csv", "extras.print_config=false",
         "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.sample_grid"]


def train(minutes: int) -> Path:
    from hydra import compose, initialize_config_dir

    from glowlab.training.config import CONF_DIR
    from glowlab.training.run import train as run_training

    run_dir = LOGS / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [*TRAIN, f"trainer.max_time=00:00:{minutes:02d}:00", f"paths.output_dir={run_dir}"]
    print("$ python train.py " + " ".join(overrides[:-1]) + f" hydra.run.dir={run_dir}", flush=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    metrics = run_training(cfg)
    print(f"test bpd {metrics['test/bpd']:.4f} (mnist_idx 1x28x28, {cfg.data.n_bits}-bit, the last 1,000 images) "
          f"after {metrics['wall_time_s']:.0f} s", flush=True)
    return run_dir / "checkpoints" / "best.ckpt"


def median_mass(ckpt: Path) -> float:
    """The median over the training split of each image's mean pixel value / (2**n_bits - 1)."""
    from glowlab.analysis.loading import load_model

    trained = load_model(ckpt)
    ds = trained.datamodule("fit").train_dataset
    mass = torch.stack([ds[i][0].float().mean() for i in range(len(ds))]) / (2**trained.n_bits - 1)
    return float(mass.median())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=3, help="training time")
    p.add_argument("--ckpt", type=Path, help="use this mnist_idx checkpoint instead of training one")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    a = p.parse_args()
    start = time.time()
    if not (ROOT.parent / "shared" / "data" / "mnist").is_dir() and a.ckpt is None:
        raise SystemExit("needs ../shared/data/mnist (the MNIST IDX files) or --ckpt")
    ckpt = (a.ckpt or train(a.minutes)).resolve()

    from glowlab.analysis.editing import compute_directions, manipulate_to_file

    mass = f"mass:{median_mass(ckpt):.3f}"
    attributes = ["class:7", mass]
    print(f"$ python sample.py ckpt_path={ckpt} mode=directions attribute=[{','.join(attributes)}]", flush=True)
    report = compute_directions(ckpt, attributes)
    for name, e in report["attributes"].items():
        print(f"{name}: {e['count_with']} images with, {e['count_without']} without; direction norm per level "
              f"(finest first): [{', '.join(f'{v:.3f}' for v in e['norms'])}]  ({e['definition']})")
    a.out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for name, attribute, levels in [("manipulate_digit7", "class:7", None), ("manipulate_digit7_top", "class:7", [-1]),
                                    ("manipulate_thickness", mass, None)]:
        png = a.out / f"{name}.png"
        extra = f" levels=[{levels[0]}]" if levels else ""
        print(f"$ python sample.py ckpt_path={ckpt} mode=manipulate attribute={attribute}{extra} out={png}")
        info = manipulate_to_file(ckpt, attribute, levels=levels, out=png, min_width=512)
        if info["raw_png"]:  # the README shows the enlarged grid; the raw one and the sidecar go to the logs
            shutil.move(info["raw_png"], LOGS / f"{name}_raw.png")
        shutil.move(png.with_suffix(".json"), LOGS / f"{name}.json")
        print(f"  -> {png.relative_to(ROOT)} ({info['size'][1]}x{info['size'][0]} px): levels {info['levels']}, "
              f"reconstruction at alpha=0: max abs error {info['reconstruction_max_abs_error']:.2e} (model space), "
              f"{info['reconstruction_pixels_changed']} pixels changed", flush=True)
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
