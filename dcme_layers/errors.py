"""The project's exception family. Every error raised on bad input (files, arguments, arrays, thresholds) is a
``DcmeError``; the tools catch it by name and print its one-line message. It is a ValueError, as every one of them
was before the family existed, so ``except ValueError`` keeps working.

Subclasses: ``cityscapes.DataError`` (bad input data; in turn ``crops.ClassifyError``,
``export.EvaluationError``, ``inference.InferenceError``, ``resumable.DiskFullError``), ``encoding.EncodingError``,
``decoding.DecodingError`` (malformed vector maps, thresholds out of range), ``unpool.UnpoolError``.
"""


class DcmeError(ValueError):
    """Bad input to dcme-caffe; the message fits on one line and names the file or argument at fault."""
