"""Evaluation protocols (linear probe, kNN, fine-tuning, reconstruction; BSDS500 boundaries) and
their ``gmae eval`` commands. See docs/evaluation.md."""
