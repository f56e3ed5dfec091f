"""culturespa: Self-Pluralising Culture Alignment (CultureSPA, Xu et al., NAACL 2025) for any instruction-tuned LLM."""

__version__ = "0.1.0"
