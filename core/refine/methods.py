"""The box-refinement methods by name (importable without loading any of them)."""

METHODS: dict[str, str] = {
    "auto": "the best measured method within the latency target (currently grabcut-fast)",
    "grabcut-fast": "SegStudio's GrabCut: working-size models and cuts, full-resolution band refinement",
    "grabcut": "OpenCV GrabCut at full resolution (the classic reference)",
    "densecrf": "fully connected CRF from the box alone",
    "grabcut+crf": "grabcut-fast, then a fully connected CRF on its result",
    "sam": "Segment Anything with the box as prompt (needs the sam-vit-base weights)",
    "sam+crf": "Segment Anything, then a fully connected CRF on its probabilities",
}
AUTO_METHOD = "grabcut-fast"
