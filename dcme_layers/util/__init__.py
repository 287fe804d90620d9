"""Infrastructure that knows nothing of DCME: the error family, atomic files, the resumable-job mechanism, the
process pool, the tools' runner and argument types, external commands with their logs."""
__all__ = ["cli", "commands", "disk", "errors", "files", "pool", "records", "resumable", "store"]
