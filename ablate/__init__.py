"""ablate: RL post-training of language models as reproducible four-slot ablation studies."""

__version__ = "0.1.0"
