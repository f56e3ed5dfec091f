"""Start-up checks of the CRQPC sampling settings the answers and pairs stages share (``data.samples``,
``data.noise_replicates``, the majority test's reachable significance): run with the config's own checks, before
any model is loaded, so every problem shows in one line."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf


def smallest_p(k: int) -> float:
    """The smallest p-value the exact test can give with k valid samples per setting (all of one option vs all of
    another: two tables of probability 1 / C(2k, k))."""
    return min(1.0, 2 / math.comb(2 * k, k))


def sampling_errors(cfg: DictConfig) -> list[str]:
    """One message per invalid CRQPC sampling setting (checked at start-up, before any model is loaded)."""
    errors: list[str] = []
    criterion = OmegaConf.select(cfg, "data.criterion", default="answer")
    k = OmegaConf.select(cfg, "data.samples", default=1)
    replicates = OmegaConf.select(cfg, "data.noise_replicates", default=0)
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 0:
        errors.append(f"data.noise_replicates={replicates!r} must be a non-negative integer")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return [*errors, f"data.samples={k!r} must be a positive integer"]
    resamples = OmegaConf.select(cfg, "data.bootstrap", default=1000)
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 1:
        errors.append(f"data.bootstrap={resamples!r} must be a positive integer")
    mode = OmegaConf.select(cfg, "decoding.mode", default=None)
    if OmegaConf.select(cfg, "task_name", default=None) not in ("generate", "pipeline"):
        mode = None  # train / evaluate read the pairs, whatever decoding collected them
    if criterion == "majority":
        alpha = OmegaConf.select(cfg, "data.alpha", default=0.05)
        if mode is not None and mode != "sample":
            errors.append(
                f"data.criterion=majority needs decoding=sample (decoding.mode={mode} is deterministic: "
                "k samples would all be the same answer)"
            )
        elif isinstance(alpha, (int, float)) and smallest_p(k) > alpha:
            fits = next(n for n in range(1, 64) if smallest_p(n) <= alpha)
            errors.append(
                f"data.criterion=majority: data.samples={k} can never reach data.alpha={alpha} "
                f"(smallest exact p-value {smallest_p(k):.3g}); use data.samples>={fits}"
            )
    if criterion == "distribution" and mode == "sample" and replicates < 1:
        errors.append(
            "data.criterion=distribution with sampled answers calibrates its threshold on unaware replicates: "
            "set data.noise_replicates>=1"
        )
    return errors
