"""End-to-end runs: typed options in, metrics and files out."""
