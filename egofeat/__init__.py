"""egofeat: an offline feature store for egocentric video, and lightweight heads on it."""

__version__ = "0.1.0"
