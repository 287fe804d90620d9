"""Argument types shared by the tools: counts that argparse rejects with one usage line when out of range
(`--limit -1` would otherwise slice away the last frame)."""
import argparse


def _int_at_least(low, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be {what}")
        return value
    parse.__name__ = what.replace(" ", "_")
    return parse


#: A count (0 allowed): --limit, --figures, --max-instances.
count = _int_at_least(0, ">= 0")
#: A positive count: --workers, --commit-every, --size.
positive = _int_at_least(1, ">= 1")
