"""Reproduce 'Enhancing Cognition and Explainability of Multimodal Foundation Models with Self-Synthesized Data' (Shi et al., ICLR 2025)

Modules:

- `selfsynth.data`: The common dataset manifest and concept file, the loaders of the paper's six datasets as distributed (each with a tiny fixture tree in its layout), CUB's attributes as concepts, and the run's data stage.
- `selfsynth.datacheck`: `selfsynth data check` and `selfsynth data concepts`: a dataset as distributed checked before compute is spent on it (images decode, ids, splits, labels against the concept file), and a concept file written for it.
- `selfsynth.evaluate`: Accuracy, explanation existence (EE), cognition score (CS), fluency (FS) and grounded precision of a model's answers on the test split, with an offline judge and an LLM judge.
- `selfsynth.integrity`: A finished stage's outputs checked against what its manifest recorded (sizes and digests), and the manifest against a seal of its own contents: a damaged artifact is named and recomputed, never silently read.
- `selfsynth.llm`: The one OpenAI-compatible chat-completions client (bounded retries, one error type) that concept generation, the direct-selection baseline, the LLM judge and preflight ask through, and the expert concepts generated with it.
- `selfsynth.preflight`: Before the first stage, check every path and service a run will need, and stop within seconds with one line per problem, touching nothing in the run folder.
- `selfsynth.report`: The paper's tables and figures regenerated from a run folder's artifacts, the paper's numbers beside ours, and `results.json`.
- `selfsynth.theory`: Five checks of the properties the method relies on — consistency of concept selection, the InfoNCE bound, the method's own InfoNCE critic, data processing, best-of-k filtering — each stated as a property, measured against a calibrated threshold, and shown to fail on a deliberately broken input (its control).
- `selfsynth.world`: Procedurally drawn fine-grained birds with expert concept lists and exact per-image ground truth: the offline stand-in for CUB-200 that lets every step of the method run, and be measured, on a CPU."""

__version__ = "0.1.0"
