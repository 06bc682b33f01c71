"""The OcrJob kopf operator (import name `ocrjob_operator`: `operator` is a standard-library module)."""
