"""After training: sample images from a checkpoint and score images by likelihood.

* :mod:`glowlab.analysis.sampling`: sample grids, temperature rows, latent interpolation,
  reconstructions (``sample.py``).
* :mod:`glowlab.analysis.scoring`: per-image bits/dim, out-of-distribution sets, AUROC
  (``score.py``).

Both rebuild the model and its data from the checkpoint alone (:func:`load_trained`).
"""

from glowlab.analysis.loading import inference_weights, load_trained, run_dir_of

__all__ = ["inference_weights", "load_trained", "run_dir_of"]
