"""Building indexes: the resumable pipeline that embeds a gallery source into an index, and keeping it in sync."""
from .paths import DEFAULT_INDEX_ROOT_ENV, PERSISTENT_DATA_DIR, default_index_root, index_dir_for
from .pipeline import BuildReport, ProgressCallback, build_index, tune_ef_if_due
from .sync import sync_index

__all__ = ["DEFAULT_INDEX_ROOT_ENV", "PERSISTENT_DATA_DIR", "BuildReport", "ProgressCallback", "build_index", "default_index_root",
           "index_dir_for", "sync_index", "tune_ef_if_due"]
