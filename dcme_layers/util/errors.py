"""The project's exception family. Every error raised on bad input (files, arguments, arrays, thresholds) is a
``DcmeError``; the tools catch it by name and print its one-line message. It is a ValueError, as every one of them
was before the family existed, so ``except ValueError`` keeps working.

Every exception class of the project is here, so infrastructure never imports a domain module for one.
"""

__all__ = ["DcmeError", "DataError", "EncodingError", "DecodingError", "UnpoolError", "DiskFullError",
           "ClassifyError", "EvaluationError", "InferenceError", "PartialDamaged"]


class DcmeError(ValueError):
    """Bad input to dcme-caffe; the message fits on one line and names the file or argument at fault."""


class DataError(DcmeError):
    """Bad input data (missing, corrupt, mismatched or wrongly sized files, unknown ids). The message names the file
    and fits on one line. A ``DcmeError`` (so a ValueError)."""


class EncodingError(DcmeError):
    """A malformed instance map or vector map, or an unknown anchor (a DcmeError, so a ValueError)."""


class DecodingError(DcmeError):
    """A malformed vector map (shape, NaN/inf), thresholds out of range or an unknown method; a DcmeError (so a
    ValueError)."""


class UnpoolError(DcmeError):
    """Bad bottoms for the Unpool layer (shapes or indices)."""


class DiskFullError(DataError):
    """No space left for the output; the message names the file and says that a rerun resumes."""


class ClassifyError(DataError):
    """Bad input for extraction or classification (a DataError, so a ValueError); the message names the file."""


class EvaluationError(DataError):
    """Bad predictions or ground truth for the evaluation; the message names the file and fits on one line."""


class InferenceError(DataError):
    """Bad blob file or mismatched inputs; the message names the file."""


class PartialDamaged(DataError):
    """The files a killed run left in a partial output cannot be used; ``resumable.Job.run`` starts it over (the
    message says why)."""
