"""Imported first by tests that need the training extra: skips the module when it is missing."""

from __future__ import annotations

from _train_deps import require_train_extra

require_train_extra()
