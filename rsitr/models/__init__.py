"""Models: the OpenCLIP retrieval wrapper and the heads and adapters the methods add to it."""

from rsitr.models.clip import TINY_MODEL, ImageFeatures, RetrievalCLIP, TextFeatures, create_retrieval_model

__all__ = ["TINY_MODEL", "ImageFeatures", "RetrievalCLIP", "TextFeatures", "create_retrieval_model"]
