"""rsitr: remote sensing image-text retrieval with CLIP (EBAKER / iEBAKER, CMER, FTF) and a search product."""

__version__ = "0.1.0"
