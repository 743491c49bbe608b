"""The task model (issue 14): a small semantic segmenter, its training runs and its evaluation.

- :mod:`core.task.model`: a U-Net of configurable depth and width (optionally torchvision's LR-ASPP /
  DeepLabV3 on MobileNetV3 when their backbone weights are installed locally).
- :mod:`core.task.data`: samples read through the dataset store, the seeded train/val/test split, synthetic
  folders mixed in at a ratio, and the standard augmentations.
- :mod:`core.task.trainer`: ``train_segmenter(config, out_dir)`` writes a resumable run folder.
- :mod:`core.task.evaluate`: confusion matrices, IoU, ``evaluate_segmenter``, ``predict``, ``score_sample``.
- :mod:`core.task.commands`: the ``train-segmenter`` and ``evaluate-segmenter`` commands.

Importing any of these modules does not import torch; the networks are defined on first use.
"""
