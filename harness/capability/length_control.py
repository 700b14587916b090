"""Length-controlled win rate (the idea of AlpacaEval 2's LC win rate, Dubois et al. 2024).

Judges, GPT-4 included, favour longer answers, so a model can raise its win rate by talking more. The
model, fitted on the prompts of one run:

    logit P(win_i) = theta + phi * tanh(delta_i / s)

with delta_i = len(model response_i) - len(reference_i) in characters and s the standard deviation of
delta over the prompts (tanh bounds the pull of extreme lengths, as in AlpacaEval). Ties enter as a
half win (fractional binomial likelihood). The length-controlled win rate is the fitted preference at
zero length difference, sigmoid(theta). AlpacaEval 2 also fits a per-instruction difficulty shared
across many models; with one model and one reference that term is not identifiable and is left out.
When every pair has the same length difference (one prompt, say) length cannot be told from
preference and phi stays 0. A weak L2 penalty (``L2``) on theta and phi keeps the fit finite when every
pair is won or lost (perfect separation). The fit is scipy's trust-region Newton method (``trust-exact``)
on the penalised likelihood; its interval is a percentile bootstrap over prompts that refits the model on
each resample.
"""

from __future__ import annotations

from dataclasses import dataclass

L2 = 0.01


@dataclass(frozen=True)
class LengthControlled:
    rate: float  # sigmoid(theta): the win rate at zero length difference
    low: float
    high: float
    n: int
    theta: float
    phi: float  # > 0: longer responses than the reference win more often


def _length_feature(model_lengths, reference_lengths):
    import numpy as np

    delta = np.asarray(model_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    scale = float(delta.std()) or 1.0
    return np.tanh(delta / scale)


def fit_length_model(scores, feature) -> tuple[float, float]:
    """(theta, phi) maximising the L2-penalised fractional binomial likelihood."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    y = np.asarray(scores, dtype=float)
    x = np.asarray(feature, dtype=float)
    if np.ptp(x) == 0:
        # One length difference for every pair (always so for one prompt, and in some bootstrap resamples):
        # the length term would be a second intercept, and the L2 penalty would hand it half the preference,
        # pulling sigmoid(theta) towards 0.5. Length cannot be told from preference here: phi stays 0.
        x = np.zeros_like(x)

    def objective(params):
        theta, phi = params
        z = theta + phi * x
        nll = -(y * log_expit(z) + (1 - y) * log_expit(-z)).sum() + 0.5 * L2 * (theta**2 + phi**2)
        residual = expit(z) - y
        grad = np.array([residual.sum() + L2 * theta, (residual * x).sum() + L2 * phi])
        return nll, grad

    design = np.stack([np.ones_like(x), x], axis=1)

    def hessian(params):
        p = expit(params[0] + params[1] * x)
        return (design * (p * (1 - p))[:, None]).T @ design + L2 * np.eye(2)

    # Newton steps with the exact Hessian: a 2-parameter convex problem converges in a handful of steps,
    # which matters because the bootstrap refits it hundreds of times.
    result = minimize(objective, np.zeros(2), jac=True, hess=hessian, method="trust-exact")
    return float(result.x[0]), float(result.x[1])


def length_controlled_win_rate(scores, model_lengths, reference_lengths, *, confidence: float = 0.95,
                               n_resamples: int = 400, seed: int = 0) -> LengthControlled:
    import numpy as np
    from scipy.special import expit
    from scipy.stats import bootstrap

    y = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("length_controlled_win_rate of no scores")
    x = _length_feature(model_lengths, reference_lengths)
    theta, phi = fit_length_model(y, x)
    rate = float(expit(theta))
    if len(y) < 3 or np.all(y == y[0]):
        # Every pair won (or lost, or tied): resampling cannot spread, so take the plain win rate's Wilson
        # interval (ties as half a win, rounded down) rather than a falsely narrow one.
        from harness.core.stats import wilson_interval

        low, high = wilson_interval(int(y.sum()), len(y), confidence)
    else:
        def statistic(ys, xs):
            return expit(fit_length_model(ys, xs)[0])

        ci = bootstrap((y, x), statistic, paired=True, vectorized=False, confidence_level=confidence,
                       n_resamples=n_resamples, method="percentile",
                       random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    return LengthControlled(rate, min(low, rate), max(high, rate), len(y), theta, phi)
