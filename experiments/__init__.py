"""Research experiments built on mmsearch-env: each one a package with its own README, config and results.

Not part of the installed package: run them from the repository root (``python -m experiments.<name>.run``).
"""
