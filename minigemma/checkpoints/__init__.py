"""Checkpoints: minigemma's own format (`format`) and the converters into it (`hf`, `convert`)."""
