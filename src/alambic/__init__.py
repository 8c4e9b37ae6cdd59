"""alambic: distil a large open teacher into your own small, private, specialised model."""

__version__ = "0.1.0"
