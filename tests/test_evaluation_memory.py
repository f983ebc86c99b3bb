"""An evaluation at the largest `samples` a job accepts fits the memory of the pipeline's evaluate task, and
its samples, drawn a batch at a time, are the ones drawn at once."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluation_memory import measure, quantity_bytes
from training.sampling import latent_batches, latents


def test_latents_drawn_a_batch_at_a_time_are_the_ones_drawn_at_once():
    """An evaluation draws its latents BATCH at a time: the same samples as before, for the same seed."""
    for n, batch in ((2500, 1000), (7, 1000), (1000, 1000)):
        batches = list(latent_batches(n, 100, seed=(3, 4), batch_size=batch))
        assert [len(b) for b in batches] == [min(batch, n - s) for s in range(0, n, batch)]
        np.testing.assert_array_equal(np.concatenate(batches), latents(n, 100, seed=(3, 4)))


def test_memory_quantities_read_as_kubernetes_writes_them():
    assert quantity_bytes("4Gi") == 4 * 2**30 and quantity_bytes("512Mi") == 512 * 2**20
    assert quantity_bytes("4G") == 4 * 10**9 and quantity_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a memory quantity"):
        quantity_bytes("4 GB")


@pytest.mark.slow
def test_the_evaluate_job_at_the_largest_samples_fits_the_evaluate_tasks_memory(mnist_path):
    """Measured on 2 CPU cores: the job peaks at about 2.1 GB, and a sample adds 576 bytes (its float32
    features and probabilities, its class and its radius), so 1,000,000 samples need about 2.7 GB of the
    task's 4 GiB. Held at once, the images alone (3 GB) and the distances (33 GB) did not fit."""
    result = measure(str(mnist_path), [5_000, 10_000])
    assert 0 < result["bytes_per_sample"] < 1024, result
    assert result["at_max_samples_bytes"] < result["task_memory_bytes"], result
