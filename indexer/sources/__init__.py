"""Gallery sources: where a gallery's images come from, read as one stream of records, each source able to give
back the image of any of its rows."""
from .base import (AUTO, BUILTIN, BUILTIN_SOURCE_PREFIX, DATASET_SOURCE_PREFIX, NONE, SOURCE_IDENTITY, GallerySource,
                   Record, SourceError, SourceKind)
from .builtin import BUILTIN_IMAGES, BuiltinSource, builtin_image
from .dataset import DatasetSource, detect_image_column, detect_label_column
from .folder import FolderSource, image_files
from .labelled import LabelledImages, image_folder, load_labelled
from .resolve import open_source

__all__ = [
    "AUTO", "BUILTIN", "BUILTIN_IMAGES", "BUILTIN_SOURCE_PREFIX", "DATASET_SOURCE_PREFIX", "NONE", "SOURCE_IDENTITY",
    "BuiltinSource", "DatasetSource", "FolderSource", "GallerySource", "Record", "SourceError", "SourceKind",
    "LabelledImages", "builtin_image", "detect_image_column", "detect_label_column", "image_files", "image_folder",
    "load_labelled", "open_source",
]
