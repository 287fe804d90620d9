"""The method itself: the paper's constants, the encoding (Eqs. 1-2) and the four-step decoding."""
__all__ = ["decoding", "encoding", "extraction", "jit", "paper", "thresholds", "voting"]
