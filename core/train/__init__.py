"""GANs trained on the user's own data (issue 13).

Two kinds:

- ``label2image``: an OASIS-style label-map-to-image GAN (SPADE generator with 3D noise, a segmentation
  discriminator with N+1 classes, class-balanced cross-entropy, optional LabelMix); the label map is kept and
  only the image is made.
- ``pair``: a DCGAN-style generator of image + class scores with a WGAN-GP critic on the concatenated pair;
  labels are the argmax over the dataset's present classes, so they never leave the class set.

Modules: :mod:`config` (settings), :mod:`data` (loading, resizing, one-hot, seeded batches), :mod:`toy`
(a synthetic dataset for tests and benchmarks), :mod:`nets`, :mod:`losses`, :mod:`trainer` (the run
folder, checkpoints, resume) and :mod:`generation` (loading a run and generating from it).
torch is imported by those modules only, never by this package's import.
"""

from core.train.config import KINDS, TrainConfig

__all__ = ["KINDS", "TrainConfig"]
