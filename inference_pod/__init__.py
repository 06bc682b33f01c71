"""OcrJob loader: runs PaddleOCR over one shard of an S3 prefix (or a local folder), pinned to one device."""

__version__ = "0.1.0"
