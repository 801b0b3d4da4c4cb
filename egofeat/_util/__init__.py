"""Small helpers below every layer: restricted unpickling, JSON-safe values, hashing, progress,
and typed settings files. Nothing here imports the rest of egofeat."""
