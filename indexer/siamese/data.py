"""Identity-labelled images for the trainers: one loader with the gallery's (indexer.data)."""
from ..data import LabelledImages, image_folder, load_labelled

__all__ = ["LabelledImages", "image_folder", "load_labelled"]
