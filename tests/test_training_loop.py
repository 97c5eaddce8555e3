"""The training loop's helpers on known answers: top-k accuracy, BatchNorm re-estimation, label smoothing."""

import torch

from transfer_core.data import DeviceBatches
from transfer_core.runtime import resolve_runtime
from transfer_core.training import TrainRecipe, TrainStats, reestimate_batchnorm, top_k_pct, train

RUNTIME = resolve_runtime("cpu")


def test_top_k_counts_an_image_right_when_its_label_is_among_the_k_highest():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.2, 0.3]])
    labels = torch.tensor([2, 0, 1, 1])  # top-1 right for image 1 only; top-2 also for images 0 and 2
    assert top_k_pct(logits, labels, 1) == 25.0
    assert top_k_pct(logits, labels, 2) == 75.0
    assert top_k_pct(logits, labels, 3) == 100.0


def test_batchnorm_reestimation_is_the_plain_average_over_every_batch():
    """Not a running average that forgets the early batches: with batches of equal size, the running mean is the
    mean over all images and the running variance the average of the batches' unbiased variances."""
    images = (
        torch.randn(96, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
        + torch.arange(96).view(-1, 1, 1, 1) / 10
    )
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    model[0].running_mean.fill_(7.0)
    batches = DeviceBatches(images, torch.zeros(96, dtype=torch.long), 32, train=False)
    reestimate_batchnorm(model, batches, RUNTIME)
    per_channel = images.permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(model[0].running_mean, per_channel.mean(1), atol=1e-5)
    batch_vars = [b.permute(1, 0, 2, 3).reshape(3, -1).var(1, unbiased=True) for b in images.split(32)]
    assert torch.allclose(model[0].running_var, torch.stack(batch_vars).mean(0), atol=1e-4)
    assert model[0].momentum == 0.1 and not model.training  # its own momentum back, in evaluation mode


def test_label_smoothing_changes_what_a_fit_learns():
    inputs = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(64) % 4

    def fit(smoothing: float) -> torch.Tensor:
        torch.manual_seed(0)
        head = torch.nn.Linear(8, 4)
        recipe = TrainRecipe(epochs=2, batch_size=16, lr=0.1, label_smoothing=smoothing, schedule="constant")
        train(head, DeviceBatches(inputs, labels, 16, train=True), recipe, RUNTIME)
        return head.weight.detach().clone()

    assert torch.equal(fit(0.0), fit(0.0))  # the fit is deterministic: any difference below is the smoothing's
    assert not torch.allclose(fit(0.0), fit(0.3), atol=1e-4)


def test_a_sum_of_trainings_keeps_the_decision_of_the_one_that_compiled():
    # a grid's record sums its points' stats: the decision it shows is the compiled point's, whose compile it lists
    eager, compiled, later = ({"compiled": False, "n": 1}, {"compiled": True, "n": 2}, {"compiled": False, "n": 3})
    total = TrainStats()
    for decision in (eager, compiled, later):
        total += TrainStats(compile_decision=decision)
    assert total.compile_decision is compiled
    total = TrainStats()
    for decision in (eager, None, later):
        total += TrainStats(compile_decision=decision)
    assert total.compile_decision is later  # none compiled: the last
