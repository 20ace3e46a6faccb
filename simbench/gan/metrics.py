"""GAN quality metrics: FID, a classifier score (inception-score analogue) and class coverage.

FID (Heusel et al., "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium", NeurIPS 2017): with feature means mu_r, mu_g and covariances S_r, S_g of real
and generated samples, ``FID = ||mu_r - mu_g||² + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})``; the
matrix square root is ``scipy.linalg.sqrtm``. When the product is near-singular (few
samples), eps·I is added to both covariances as in the reference implementation
(pytorch-fid). The seed computes it on ``fid_batch`` generated and ``fid_batch`` test images.

Classifier score (Salimans et al. 2016's inception score with the shipped classifier):
``exp(E_x KL(p(y|x) || p(y)))``, between 1 and the number of classes.
Class coverage (mode-collapse indicator): the fraction of classes that the classifier
assigns to at least a quarter of their fair share (n / K / 4) of the generated samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of an (n, d) feature array."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected with few samples; handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # numerical noise from a near-singular product
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def classifier_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of an (n, K) array of class probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    py = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(py + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def class_coverage(probs: np.ndarray, share: float = 0.25) -> float:
    """Fraction of classes predicted for at least ``share`` × n/K of the samples."""
    p = np.asarray(probs)
    n, k = p.shape
    counts = np.bincount(p.argmax(axis=1), minlength=k)
    return float((counts >= max(1.0, share * n / k)).mean())


@dataclass
class GanScores:
    fid: float
    class_score: float
    coverage: float


class GanEvaluator:
    """Scores generated images against fixed real images with one feature network.

    ``features`` maps images to (n, d) features (the FidNet or Inception-v3 pool features);
    ``classifier`` maps images to class logits (always the shipped FidNet). The real
    statistics are computed once.
    """

    def __init__(self, real: torch.Tensor, features, classifier, batch: int = 500) -> None:
        self.features, self.classifier, self.batch = features, classifier, batch
        self.mu_r, self.sigma_r = feature_stats(self._feats(real))

    @torch.no_grad()
    def _feats(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().float().cpu()  # the feature network lives on the CPU; generators may not
        return torch.cat([self.features(x[i:i + self.batch]) for i in range(0, len(x), self.batch)]).double().numpy()

    @torch.no_grad()
    def _probs(self, x: torch.Tensor) -> np.ndarray:
        logits = torch.cat([self.classifier(x[i:i + self.batch]) for i in range(0, len(x), self.batch)])
        return torch.softmax(logits.double(), dim=1).numpy()

    def fid(self, fake: torch.Tensor) -> float:
        """FID of ``fake`` (any device) against the fixed real images."""
        mu, sigma = feature_stats(self._feats(fake))
        return frechet_distance(mu, sigma, self.mu_r, self.sigma_r)

    def score(self, fake: torch.Tensor) -> GanScores:
        fake = fake.detach().float().cpu()
        probs = self._probs(fake)
        return GanScores(self.fid(fake), classifier_score(probs), class_coverage(probs))


def inception_features(cache_only: bool = True):
    """torchvision's Inception-v3 pool features (2048-d), only from locally cached weights.

    Raises
    ------
    FileNotFoundError
        The weights are not in torch's hub cache (no download is attempted).
    """
    import torchvision
    from torchvision.models import Inception_V3_Weights

    weights = Inception_V3_Weights.IMAGENET1K_V1
    cached = torch.hub.get_dir() + "/checkpoints/" + weights.url.rsplit("/", 1)[-1]
    import os
    if cache_only and not os.path.isfile(cached):
        raise FileNotFoundError(f"fid: inception needs torchvision's Inception-v3 weights at {cached} "
                                "(not downloaded by simbench); use fid: fidnet")
    net = torchvision.models.inception_v3(weights=weights, aux_logits=True).eval()
    net.fc = torch.nn.Identity()

    @torch.no_grad()
    def feats(x: torch.Tensor) -> torch.Tensor:
        x = (x + 1) / 2  # [-1, 1] -> [0, 1]
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return net((x - mean) / std)

    return feats
