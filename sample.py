"""Images from a checkpoint: `python sample.py ckpt_path=RUN/checkpoints/best.ckpt [mode=...]` (see conf/sample.yaml)."""

from glowlab.analysis.cli import sample_main

if __name__ == "__main__":
    sample_main()
