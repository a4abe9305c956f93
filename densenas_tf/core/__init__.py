"""Plumbing every part shares: the user-facing error class, atomic file writes,
run-directory locks, the progress bar and strategies, TensorBoard summary tags.

Layer 0: imports nothing else from the package.
"""
