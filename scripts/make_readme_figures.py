"""Make the README's pictures: train a digits Glow, then run the commands the README shows.

    python scripts/make_readme_figures.py [--minutes 3] [--ckpt RUN/checkpoints/best.ckpt] [--no-sweep]

Every command is printed and run as a user would type it (``python train.py ...``,
``python sample.py ...``, ``python score.py ...``) from the repo root, writing under
``logs/readme/``. The PNGs are then copied into ``docs/images/`` as ``sample.py`` wrote them
(already enlarged, nearest neighbour, to at least 256 px wide: its ``min_width``), with the
histograms of ``score.py`` and the sweep's ``summary.md``; ``score.py`` prints the AUROCs the
README quotes.
Takes about ``--minutes`` plus 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "logs" / "readme"
QUIET = ["extras.print_config=false", "~callbacks.progress_bar", "~callbacks.model_summary"]


def run(*args: str) -> None:
    """Run ``python ARGS`` in the repo root, echoing the command; stop on failure."""
    print("$ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def copy(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    print(f"  -> {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=3, help="training time of the digits Glow")
    p.add_argument("--ckpt", type=Path, help="use this checkpoint instead of training one")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    p.add_argument("--no-sweep", action="store_true", help="skip the 2-job sweep example")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    ckpt = a.ckpt
    if ckpt is None:
        run_dir = LOGS / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        run("train.py", "experiment=digits_glow", f"trainer.max_time=00:00:{a.minutes:02d}:00",
            "trainer.max_epochs=1000", "logger=csv", *QUIET, f"hydra.run.dir={run_dir}")
        ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt = ckpt.resolve()
    samples = LOGS / "samples"
    for name, args in [("sample_grid", ["n=64", "temperature=0.7"]), ("sample_temperatures", ["mode=temperatures"]),
                       ("sample_interpolate", ["mode=interpolate"]),
                       ("sample_reconstruct", ["mode=reconstruct", "n=32"])]:
        png = samples / f"{name}.png"
        run("sample.py", f"ckpt_path={ckpt}", *args, f"out={png}", f"hydra.run.dir={LOGS / 'hydra' / name}")
        copy(png, a.out / f"{name}.png")  # sample.py enlarged it already (min_width=256)

    oods = [("noise", []), ("shuffled_pixels", [])]
    if (ROOT.parent / "shared" / "data" / "mnist").is_dir():  # real MNIST, resized to the digits' 8x8
        oods.append(("mnist_idx", ["ood.image_size=8"]))
    for ood, extra in oods:
        out = LOGS / "scores" / ood
        run("score.py", f"ckpt_path={ckpt}", f"ood_data={ood}", *extra, f"out={out}",
            f"hydra.run.dir={LOGS / 'hydra' / f'score_{ood}'}")
        shutil.copy(out / "histogram.png", a.out / f"score_histogram_{ood}.png")
        print(f"  -> {(a.out / f'score_histogram_{ood}.png').relative_to(ROOT)}")

    if not a.no_sweep:
        sweep = LOGS / "sweep"
        shutil.rmtree(sweep, ignore_errors=True)
        run("train.py", "-m", "experiment=digits_glow", "model.depth=2,4", "model.hidden_channels=32",
            "trainer.max_epochs=2", "logger=csv", *QUIET, "~callbacks.sample_grid", f"hydra.sweep.dir={sweep}")
        shutil.copy(sweep / "summary.md", a.out / "sweep_summary.md")
        print(f"  -> {(a.out / 'sweep_summary.md').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
