"""The web service of the search product: a FastAPI app over an :class:`rsitr.index.ArchiveIndex`."""
