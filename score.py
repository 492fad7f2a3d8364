"""Per-image bits/dim and OOD AUROC (options: conf/score.yaml)::

    python score.py ckpt_path=RUN/checkpoints/best.ckpt [ood_data=noise]
"""

from glowlab.analysis.cli import score_main

if __name__ == "__main__":
    score_main()
