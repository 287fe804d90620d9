"""The files of one resumable job: the steps ``resumable.Job.run`` calls to open, check, write and complete them."""

__all__ = ["Store"]


class Store:
    """The files a ``Job.run`` writes its items into, inside the partial folder; each job subclasses the steps it
    needs. ``run`` calls ``open`` once, ``nbytes`` and ``write`` per batch, then ``complete``, and ``close`` always.
    """

    #: The file or folder of the partial that the items go to ("" for the partial itself); full-disk lines name it.
    target = ""

    def open(self, partial, done):
        """Open (or create) the files in ``partial``; returns the items of ``done`` ({key: value}) whose data they
        still hold (the others are redone). PartialDamaged when they are unusable: the partial is started over."""
        return done

    def nbytes(self, batch):
        """Bytes the batch [(key, result)] takes on disk: ``run`` stops before writing unless they are free (0: no
        check)."""
        return 0

    def write(self, batch):
        """Write the batch [(key, result)] and flush it to disk; returns [(key, done value as str)]."""
        raise NotImplementedError

    def complete(self, done):
        """Write the output's last files (e.g. a manifest) once every item is done ({key: value})."""

    def close(self):
        """Close the files; called after an error too, and before a start-over."""
