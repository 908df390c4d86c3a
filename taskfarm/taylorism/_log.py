"""``taylorism_log``: the logger of the compatibility layer, made by bronx's logger
factory and named ``taylorism`` as taylorism's own was, so that a program's logging
configuration for it (``logging.getLogger("taylorism").setLevel(...)``) still applies.
It is outside the ``taskfarm`` hierarchy, so ``verbose=True`` (which adds a handler to
``taskfarm``) does not print its records twice."""

from __future__ import annotations

import logging

from bronx.fancies import loggers

__all__ = ["taylorism_log"]

taylorism_log: logging.Logger = loggers.getLogger("taylorism")
