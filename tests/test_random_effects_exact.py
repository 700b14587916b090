"""The between-model fit (harness.core.random_effects) against the textbook: its grid posterior of (mu, tau)
against the marginal likelihood integrated by quadrature, the prior alone when no group has a row, and the
draws of a new group's rate against that posterior's exact mixture distribution. The fit behind every
no-label interval; mutation testing found its priors and its smoothing unchecked by the statistical tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit, logit

from harness.core.random_effects import MU_PRIOR_SD, TAU_SCALE, fit_logit_normal

HITS, TRIALS = [3, 7, 1], [10, 12, 1]  # a group of one row counts too


def posterior_by_quadrature(mu: float, tau: float) -> float:
    """The unnormalised posterior at (mu, tau): the priors times each group's binomial likelihood integrated
    over its own rate, logit(p) ~ Normal(mu, tau^2)."""
    value = stats.norm.pdf(mu, 0, MU_PRIOR_SD) * stats.norm.pdf(tau, 0, TAU_SCALE)
    for k, n in zip(HITS, TRIALS):
        if tau == 0:
            value *= stats.binom.pmf(k, n, expit(mu))
        else:
            def integrand(theta, k=k, n=n):
                return stats.binom.pmf(k, n, expit(theta)) * stats.norm.pdf(theta, mu, tau)

            value *= integrate.quad(integrand, mu - 10 * tau, mu + 10 * tau, limit=200)[0]
    return value


def cell(fit, mu: float, tau: float) -> tuple[int, int]:
    return int(np.abs(np.asarray(fit.mu) - mu).argmin()), int(np.abs(np.asarray(fit.tau) - tau).argmin())


@pytest.mark.parametrize("mu, tau", [(-1.0, 0.3), (0.5, 1.0), (-2.0, 2.0), (1.0, 0.0), (-0.5, 0.05), (2.0, 3.0),
                                     (-3.0, 1.5)])
def test_the_grid_posterior_matches_the_marginal_likelihood_by_quadrature(mu, tau):
    fit = fit_logit_normal(HITS, TRIALS)
    weights = np.asarray(fit.weights)
    ref, here = cell(fit, 0.0, 0.5), cell(fit, mu, tau)
    grid_ratio = weights[here] / weights[ref]
    exact_ratio = (posterior_by_quadrature(fit.mu[here[0]], fit.tau[here[1]])
                   / posterior_by_quadrature(fit.mu[ref[0]], fit.tau[ref[1]]))
    assert grid_ratio == pytest.approx(exact_ratio, rel=2e-3)  # 1e-4 to 5e-4 measured


def test_with_no_group_the_posterior_is_the_prior_on_the_grid():
    fit = fit_logit_normal([], [])
    mu, tau = np.asarray(fit.mu)[:, None], np.asarray(fit.tau)[None, :]
    prior = np.exp(-0.5 * (mu / MU_PRIOR_SD) ** 2 - 0.5 * (tau / TAU_SCALE) ** 2)
    assert np.allclose(fit.weights, prior / prior.sum(), rtol=1e-9, atol=0)


def test_hits_may_be_none_or_all_of_the_trials_and_nothing_outside():
    assert fit_logit_normal([0, 5], [5, 5]).groups == 2
    for hits, trials in (([-1], [5]), ([6], [5])):
        with pytest.raises(ValueError, match="hits must lie between 0 and trials"):
            fit_logit_normal(hits, trials)


def test_draws_follow_the_posterior_mixture_and_quantiles_are_reproducible():
    fit = fit_logit_normal(HITS, TRIALS)
    weights = np.asarray(fit.weights)
    mu, tau = np.asarray(fit.mu)[:, None], np.maximum(np.asarray(fit.tau)[None, :], 1e-9)
    draws = fit.draws(100_000, np.random.default_rng(3))
    assert draws.shape == (100_000,)
    for x in (0.05, 0.2, 0.4, 0.6, 0.9):
        exact = float((weights * stats.norm.cdf((logit(x) - mu) / tau)).sum())  # within-cell jitter left out
        assert np.mean(draws <= x) == pytest.approx(exact, abs=0.01)
    assert float(np.mean(draws)) == pytest.approx(fit.mean(), abs=0.005)
    assert fit.quantiles([0.025, 0.975]) == fit.quantiles([0.025, 0.975])
