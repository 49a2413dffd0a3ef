"""Reproduce 'Enhancing Cognition and Explainability of Multimodal Foundation Models with Self-Synthesized Data' (Shi et al., ICLR 2025)

Modules:

- `selfsynth.data`: The common dataset manifest and concept file, the loaders of the paper's six datasets as distributed, and the sources of expert concepts (files, an LLM endpoint, CUB's attributes).
- `selfsynth.evaluate`: Accuracy, explanation existence (EE), cognition score (CS), fluency (FS) and grounded precision of a model's answers on the test split, with an offline judge and an LLM judge.
- `selfsynth.report`: The paper's tables and figures regenerated from a run folder's artifacts, the paper's numbers beside ours, and `results.json`.
- `selfsynth.theory`: Four sanity checks of the properties the method relies on — consistency of concept selection, the InfoNCE bound, data processing, best-of-k filtering — each stated as a property, measured, and able to fail.
- `selfsynth.world`: Procedurally drawn fine-grained birds with expert concept lists and exact per-image ground truth: the offline stand-in for CUB-200 that lets every step of the method run, and be measured, on a CPU."""

__version__ = "0.1.0"
