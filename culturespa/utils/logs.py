"""One console line per log record.

``import lightning`` gives the ``lightning`` logger its own console handler and leaves it propagating to the root.
Under Hydra, whose job logging gives the root a console and a file handler, every Lightning INFO line was then printed
twice (once as ``INFO: ...``, once in Hydra's format). Where the root logs already, Lightning's own console handlers
are dropped and its records go to the root only (so they also reach the run's log file).
"""

from __future__ import annotations

import logging

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


def single_log_lines() -> None:
    root = logging.getLogger()
    if not root.handlers:
        return  # nobody else prints: Lightning's own handlers are the only console output
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for handler in own:
            logger.removeHandler(handler)
        if own or not logger.handlers:
            logger.propagate = True
