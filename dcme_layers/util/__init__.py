"""Infrastructure that knows nothing of DCME: the error family, atomic files, the resumable-job mechanism, the
process pool, the tools' argument types."""
__all__ = ["cli", "disk", "errors", "files", "pool", "records", "resumable", "store"]
