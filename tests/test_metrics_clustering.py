"""Clustering agreement and the clusterers the GMVAE benchmark compares against."""

import numpy as np
import pytest

from scvi_capvi.benchmark._clustering import kmeans_clusters, leiden_clusters
from scvi_capvi.metrics import clustering_agreement, components_used


def test_clustering_agreement_known_answers():
    labels = np.array(["a", "a", "b", "b"])
    assert clustering_agreement(labels, [1, 1, 0, 0]) == {"ari": 1.0, "nmi": 1.0}
    # one cluster for everything: ARI 0 and NMI 0
    assert clustering_agreement(labels, [0, 0, 0, 0]) == {"ari": 0.0, "nmi": 0.0}
    # the pairs split across the clusters: ARI below 0 (worse than chance)
    assert clustering_agreement(labels, [0, 1, 0, 1])["ari"] < 0
    with pytest.raises(ValueError, match="same length"):
        clustering_agreement(labels, [0, 1])


def test_components_used_counts_components_with_enough_cells():
    clusters = np.array([0] * 95 + [1] * 4 + [3])
    assert components_used(clusters, 4) == 3  # 95 %, 4 % and 1 % (component 2 is empty)
    assert components_used(clusters, 4, min_fraction=0.02) == 2
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        components_used(clusters, 3)


def test_kmeans_and_leiden_find_separated_blobs():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 60)
    x = rng.normal(truth[:, None] * 6.0, 1.0, (240, 5))
    assert clustering_agreement(truth, kmeans_clusters(x, 4))["ari"] == 1.0
    clusters, resolution = leiden_clusters(x, 4)
    assert len(np.unique(clusters)) == 4 and resolution > 0
    assert clustering_agreement(truth, clusters)["ari"] == 1.0
