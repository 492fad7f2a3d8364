"""After training: sample, score and edit images with a trained density.

* :mod:`glowlab.analysis.loading`: :func:`load_model` rebuilds the density and its data module
  from a checkpoint alone (no training code); every tool below starts from it.
* :mod:`glowlab.analysis.sampling`: sample grids, temperature rows, latent interpolation,
  reconstructions (``sample.py``).
* :mod:`glowlab.analysis.manipulation`: attribute directions in latent space and edits of real
  images (:func:`latent_direction`, :func:`manipulate`); :mod:`glowlab.analysis.attributes` (where
  attributes come from) and :mod:`glowlab.analysis.editing` (``sample.py mode=directions|manipulate``).
* :mod:`glowlab.analysis.scoring`: per-image bits/dim, out-of-distribution sets, AUROC (``score.py``).
* :mod:`glowlab.analysis.grids`: PNG grids, enlarged when the images are small.
"""

from glowlab.analysis.grids import save_grid
from glowlab.analysis.latents import decode_levels, encode_levels
from glowlab.analysis.loading import Trained, inference_weights, load_model, load_trained, run_dir_of
from glowlab.analysis.manipulation import latent_direction, manipulate

__all__ = ["Trained", "decode_levels", "encode_levels", "inference_weights", "latent_direction", "load_model",
           "load_trained", "manipulate", "run_dir_of", "save_grid"]
