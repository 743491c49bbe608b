"""Gaussian mixture colour models for GrabCut-style segmentation (full covariance, numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LOG_2PI = np.log(2.0 * np.pi)
_REGULARISATION = 0.01  # added to covariance diagonals: keeps flat (single-colour) components invertible
_KMEANS_SAMPLES = 1500


@dataclass
class ColorGMM:
    """A mixture of ``K`` full-covariance Gaussians over 3-channel colours.

    Attributes:
        weights: ``K float64`` mixing weights summing to 1 (0 for empty components).
        means: ``K x 3 float64``.
        precision_chol: ``K x 3 x 3 float64``, ``L`` with ``L @ L.T`` = inverse covariance.
        log_norm: ``K float64``, ``log(weight) - 0.5 * log det(cov) - 1.5 log(2 pi)``.
    """

    weights: np.ndarray
    means: np.ndarray
    precision_chol: np.ndarray
    log_norm: np.ndarray

    @classmethod
    def from_assignments(cls, colors: np.ndarray, components: np.ndarray, k: int) -> ColorGMM:
        """Fit each component to the colours assigned to it (hard EM's M step).

        Args:
            colors: ``N x 3 float`` colours.
            components: ``N int`` component index of each colour, in ``[0, k)``.
        """
        colors = np.asarray(colors, dtype=np.float64)
        counts = np.bincount(components, minlength=k).astype(np.float64)
        safe = np.maximum(counts, 1.0)
        sums = np.stack([np.bincount(components, colors[:, a], minlength=k) for a in range(3)], axis=1)
        means = sums / safe[:, None]
        second = np.empty((k, 3, 3))
        for a in range(3):
            for b in range(a, 3):
                second[:, a, b] = second[:, b, a] = np.bincount(components, colors[:, a] * colors[:, b], minlength=k)
        covs = second / safe[:, None, None] - means[:, :, None] * means[:, None, :]
        weights = np.where(counts >= 2, counts, 0.0)
        weights = weights / max(weights.sum(), 1.0)
        covs[counts < 2] = np.eye(3) * 100.0
        if not weights.any():  # too few colours for any component: one broad Gaussian at their mean
            weights[0] = 1.0
            means[0] = colors.mean(axis=0) if len(colors) else 0.0
        return cls.from_parameters(weights, means, covs)

    @classmethod
    def from_parameters(cls, weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> ColorGMM:
        """Build from weights ``K``, means ``K x 3`` and covariances ``K x 3 x 3``."""
        k = len(weights)
        covs = np.asarray(covs, dtype=np.float64) + np.eye(3) * _REGULARISATION
        precision_chol = np.zeros((k, 3, 3))
        log_norm = np.full(k, -np.inf)
        for c in range(k):
            chol = np.linalg.cholesky(covs[c])
            precision_chol[c] = np.linalg.inv(chol).T
            if weights[c] > 0:
                log_norm[c] = np.log(weights[c]) - np.log(np.diag(chol)).sum() - 1.5 * _LOG_2PI
        return cls(np.asarray(weights, dtype=np.float64), np.asarray(means, dtype=np.float64), precision_chol, log_norm)

    @classmethod
    def fit(cls, colors: np.ndarray, k: int = 5, seed: int = 0) -> ColorGMM:
        """Initial fit: k-means (k-means++ seeding) on a subsample, then one M step over all colours.

        Args:
            colors: ``N x 3`` colours, ``N >= 1``.
        """
        colors = np.asarray(colors, dtype=np.float64)
        rng = np.random.default_rng(seed)
        sample = (
            colors
            if len(colors) <= _KMEANS_SAMPLES
            else colors[rng.choice(len(colors), _KMEANS_SAMPLES, replace=False)]
        )
        k_eff = max(1, min(k, len(np.unique(sample, axis=0))))
        centres = _kmeans(sample, k_eff, rng)
        return cls.from_assignments(colors, _nearest(colors, centres), k)

    def component_log_likelihood(self, colors: np.ndarray) -> np.ndarray:
        """``N x K`` log of ``weight_k * N(color | mean_k, cov_k)`` (``-inf`` for empty components)."""
        colors = np.asarray(colors, dtype=np.float64)
        out = np.full((len(colors), len(self.weights)), -np.inf)
        channels = [colors[:, a] for a in range(3)]
        for c in np.flatnonzero(self.weights > 0):
            # Written out per channel: BLAS matmul on N x 3 arrays costs more in thread start-up than it saves.
            d = [channels[a] - self.means[c, a] for a in range(3)]
            p = self.precision_chol[c]
            quad = np.zeros(len(colors))
            for j in range(3):
                z = d[0] * p[0, j] + d[1] * p[1, j] + d[2] * p[2, j]
                quad += z * z
            out[:, c] = self.log_norm[c] - 0.5 * quad
        return out

    @staticmethod
    def negative_log_likelihood(component_ll: np.ndarray) -> np.ndarray:
        """``N`` values of ``-log sum_k exp(component_ll)``, from :meth:`component_log_likelihood`."""
        total = np.exp(component_ll).sum(axis=1)
        with np.errstate(divide="ignore"):
            nll = -np.log(total)
        underflow = ~np.isfinite(nll)  # colours far from every component: fall back to the stable form
        if underflow.any():
            rows = component_ll[underflow]
            peak = rows.max(axis=1)
            nll[underflow] = -(peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1)))
        return nll

    def refit(self, colors: np.ndarray, component_ll: np.ndarray | None = None) -> ColorGMM:
        """Hard EM step: assign each colour to its most likely component, then re-estimate."""
        if len(colors) < 2 * len(self.weights):
            return self
        ll = self.component_log_likelihood(colors) if component_ll is None else component_ll
        return ColorGMM.from_assignments(colors, ll.argmax(axis=1), len(self.weights))


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each of ``N x 3`` points (per-channel arithmetic, no N x K x 3 temporary)."""
    best = np.full(len(points), np.inf)
    index = np.zeros(len(points), dtype=np.int64)
    for c, centre in enumerate(centres):
        d2 = (points[:, 0] - centre[0]) ** 2 + (points[:, 1] - centre[1]) ** 2 + (points[:, 2] - centre[2]) ** 2
        closer = d2 < best
        best[closer] = d2[closer]
        index[closer] = c
    return index


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 6) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; ``k x 3`` centres."""
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(axis=2), axis=1)
        total = d2.sum()
        centres.append(
            points[rng.choice(len(points), p=d2 / total)] if total > 0 else points[rng.integers(len(points))]
        )
    centres_arr = np.array(centres)
    for _ in range(iterations):
        labels = _nearest(points, centres_arr)
        for c in range(k):
            members = points[labels == c]
            if len(members):
                centres_arr[c] = members.mean(axis=0)
    return centres_arr
