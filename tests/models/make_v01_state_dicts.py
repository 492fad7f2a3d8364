"""Write tests/models/data/glowlab_0_1_state_dicts.pt: tiny models built, initialised and perturbed by
glowlab 0.1 (commit fa5be09), with their log_prob and samples, for the checkpoint-compatibility test.

Run from the repository root (it extracts the old package to a temporary folder)::

    python tests/models/make_v01_state_dicts.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

OLD_COMMIT = "fa5be09"
OUT = Path(__file__).parent / "data" / "glowlab_0_1_state_dicts.pt"
CASES = {
    "glow": ("glowlab.models.Glow", {"image_shape": (1, 4, 4), "levels": 2, "depth": 2, "hidden_channels": 6}),
    "glow_class_conditional": ("glowlab.models.Glow", {"image_shape": (1, 4, 4), "levels": 2, "depth": 2,
                                                       "hidden_channels": 6, "num_classes": 3}),
    "realnvp": ("glowlab.models.RealNVP", {"image_shape": (1, 4, 4), "levels": 2, "hidden_channels": 4,
                                           "num_blocks": 1, "learn_top": True}),
    "nice_class_conditional": ("glowlab.models.NICE", {"image_shape": (1, 2, 2), "num_couplings": 3,
                                                       "hidden_features": 8, "hidden_layers": 1, "num_classes": 2}),
}

BUILD = r'''
import sys, torch
from hydra.utils import get_class
cases, out = eval(sys.argv[1]), sys.argv[2]
result = {}
for name, (target, kwargs) in cases.items():
    torch.manual_seed(0)
    model = get_class(target)(**kwargs)
    classes = kwargs.get("num_classes", 0)
    x = torch.rand(4, *kwargs["image_shape"]) - 0.5
    y = torch.arange(4) % classes if classes else None
    with torch.no_grad():
        model.train()(torch.rand(16, *kwargs["image_shape"]) - 0.5, torch.arange(16) % classes if classes else None)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        lp = model.log_prob(x, y)
        s = model.sample(4, 0.7, y, generator=torch.Generator().manual_seed(3))
    result[name] = {"target": target, "kwargs": kwargs, "state_dict": model.state_dict(), "x": x, "y": y,
                    "log_prob": lp, "sample": s}
torch.save(result, out)
'''


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", OLD_COMMIT, "glowlab"], cwd=root, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", BUILD, repr(CASES), str(OUT)], cwd=tmp, check=True,
                       env={"PYTHONPATH": tmp, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
