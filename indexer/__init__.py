"""Twinsight's library: embedding models, image loading, gallery indexes. Never imports gradio."""
from .images import ImageError, load_image
from .models import CapabilityError, Embedder, Prediction, create_embedder, load_embedder

__all__ = ["CapabilityError", "Embedder", "ImageError", "Prediction", "create_embedder", "load_embedder", "load_image"]
