"""How a proportion moves from group to group: a binomial random-effects model on the logit scale, for a
scorer's sensitivity or specificity measured on several labelled models (``harness.scoring.transport``).

Model: group i (a model) has its own rate p_i, logit(p_i) ~ Normal(mu, tau^2), and k_i of its n_i labelled
rows are hits, k_i ~ Binomial(n_i, p_i). A new group's rate is another draw, logit(p_new) ~ Normal(mu,
tau^2), so its spread is the spread between groups (tau), not the sampling error of the pooled counts,
which shrinks with every row added while the next model can still differ as much as the last ones did.

Fit: Bayesian on a grid over (mu, tau), with weakly informative priors (mu ~ Normal(0, 3^2) on the logit
scale, tau ~ Half-Normal(scale ``tau_scale``)). Each group's marginal likelihood integrates p_i out
numerically over a fine logit grid (a Gaussian smoothing of its binomial likelihood), so a group of 800
rows and one of 1 row are both handled exactly, and groups with no row add nothing. With few groups tau is
poorly known; the posterior keeps that uncertainty, and the draws of a new group's rate carry it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

THETA_STEP = 0.04  # logit grid of the per-group integral: a group of 10,000 rows still spans several points
THETA_MAX = 12.0
MU_STRIDE = 2  # the mu grid takes every 2nd logit grid point (step 0.08)
TAU_GRID = tuple(i * 0.05 for i in range(101))  # 0 .. 5 on the logit scale
MU_PRIOR_SD = 3.0
TAU_SCALE = 1.0


@dataclass(frozen=True)
class LogitNormalFit:
    """The grid posterior of (mu, tau) and what follows from it for a new group."""

    mu: tuple[float, ...]
    tau: tuple[float, ...]
    weights: object = field(repr=False)  # numpy array (len(mu), len(tau)), sums to 1
    groups: int  # groups with at least one row

    def draws(self, size: int, rng):
        """``size`` draws of a new group's rate: (mu, tau) from the posterior (jittered within its grid
        cell), then logit(p) ~ Normal(mu, tau^2)."""
        import numpy as np
        from scipy.special import expit

        mu, tau = np.asarray(self.mu), np.asarray(self.tau)
        flat = np.asarray(self.weights).ravel()
        cell = rng.choice(flat.size, size=size, p=flat)
        i, j = np.unravel_index(cell, (mu.size, tau.size))
        dmu = mu[1] - mu[0] if mu.size > 1 else 0.0
        dtau = tau[1] - tau[0] if tau.size > 1 else 0.0
        m = mu[i] + rng.uniform(-dmu / 2, dmu / 2, size)
        t = np.abs(tau[j] + rng.uniform(-dtau / 2, dtau / 2, size))
        return expit(m + t * rng.standard_normal(size))

    def mean(self) -> float:
        """The expected rate of a new group (quadrature, no draws: the same on every call)."""
        import numpy as np
        from scipy.special import expit

        z, w = np.polynomial.hermite_e.hermegauss(40)
        w = w / w.sum()
        mu, tau = np.asarray(self.mu)[:, None, None], np.asarray(self.tau)[None, :, None]
        inner = (expit(mu + tau * z[None, None, :]) * w).sum(-1)
        return float((inner * np.asarray(self.weights)).sum())

    def quantiles(self, probs, *, size: int = 20000, seed: int = 0) -> list[float]:
        import numpy as np

        return [float(v) for v in np.quantile(self.draws(size, np.random.default_rng(seed)), probs)]

    def posterior_median(self, which: str) -> float:
        """The posterior median of ``mu`` or ``tau``."""
        import numpy as np

        axis, grid = (1, self.mu) if which == "mu" else (0, self.tau)
        marginal = np.asarray(self.weights).sum(axis=axis)
        return float(np.asarray(grid)[np.searchsorted(np.cumsum(marginal), 0.5)])


def smoothed(likes, width: float):
    """Likelihoods over the logit grid (one row per group) averaged over Normal(0, width^2) group effects:
    each group's marginal likelihood as a function of mu. The kernel holds each grid bin's exact normal
    probability; the edges continue flat, so a likelihood still high at the grid's end (0 hits of 1 row)
    stays so. One FFT convolution per width for all groups."""
    import numpy as np
    from scipy.signal import fftconvolve
    from scipy.special import ndtr

    if width == 0:
        return likes
    reach = min(int(math.ceil(8 * width / THETA_STEP)), likes.shape[1])
    edges = (np.arange(-reach, reach + 2) - 0.5) * THETA_STEP / width
    kernel = np.diff(ndtr(edges))
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(likes[:, :1], reach, 1), likes, np.repeat(likes[:, -1:], reach, 1)], 1)
    return np.clip(fftconvolve(padded, kernel[None, :], mode="valid", axes=1), 0.0, None)


def group_likelihoods(hits, trials):
    """The logit grid, and each group's binomial likelihood over it scaled to a maximum of 1 (a constant
    factor per group, which the posterior does not see)."""
    import numpy as np
    from scipy.special import log_expit

    theta = np.arange(-THETA_MAX, THETA_MAX + THETA_STEP / 2, THETA_STEP)
    out = []
    for k, n in zip(hits, trials):
        log_l = k * log_expit(theta) + (n - k) * log_expit(-theta)
        out.append(np.exp(log_l - log_l.max()))
    return theta, out


def fit_logit_normal(hits, trials, *, mu_prior_sd: float = MU_PRIOR_SD, tau_scale: float = TAU_SCALE) -> LogitNormalFit:
    """Fit the module's model to per-group counts (hits k_i out of trials n_i)."""
    import numpy as np

    pairs = [(int(k), int(n)) for k, n in zip(hits, trials) if int(n) > 0]
    if any(not 0 <= k <= n for k, n in pairs):
        raise ValueError("hits must lie between 0 and trials")
    theta, likes = group_likelihoods([k for k, _ in pairs], [n for _, n in pairs])
    mu_idx = np.arange(0, theta.size, MU_STRIDE)
    mu = theta[mu_idx]
    tau = np.asarray(TAU_GRID)
    log_post = np.zeros((mu.size, tau.size))
    likes = np.asarray(likes).reshape(len(pairs), theta.size)
    for j, t in enumerate(tau if pairs else ()):  # no group: the priors alone
        with np.errstate(divide="ignore"):  # a likelihood of 0 is a log of -inf: that (mu, tau) is ruled out
            log_post[:, j] = np.log(smoothed(likes, t)[:, mu_idx]).sum(0)
    log_post += (-0.5 * (mu / mu_prior_sd) ** 2)[:, None]
    log_post += (-0.5 * (tau / tau_scale) ** 2)[None, :]
    log_post -= log_post.max()
    weights = np.exp(log_post)
    weights /= weights.sum()
    return LogitNormalFit(tuple(float(v) for v in mu), tuple(float(v) for v in tau), weights, len(pairs))
