"""Images from a checkpoint (options: conf/sample.yaml)::

    python sample.py ckpt_path=RUN/checkpoints/best.ckpt [mode=...]
"""

from glowlab.analysis.cli import sample_main

if __name__ == "__main__":
    sample_main()
