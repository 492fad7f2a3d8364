"""Train a flow: `python train.py [experiment=cifar_glow] [key=value ...]` (see conf/train.yaml)."""

from glowlab.training.cli import train_main

if __name__ == "__main__":
    train_main()
