"""Bits/dim of a checkpoint on its dataset: `python eval.py ckpt_path=RUN/checkpoints/best.ckpt`."""

from glowlab.training.cli import eval_main

if __name__ == "__main__":
    eval_main()
