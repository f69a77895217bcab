"""Focal loss and class-aware alpha (thesis App. C.6)."""
import pytest
import torch
import torch.nn.functional as F

import losses
import models

TABLE2_COUNTS = [74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750]
APP_C6_ALPHA = [0.403369, 0.301054, 0.691747, 0.929849, 1.382056, 1.789801, 0.699721, 1.802404]


def test_class_alpha_matches_thesis_values():
    alpha = losses.class_alpha(TABLE2_COUNTS)
    assert [round(a, 6) for a in alpha] == APP_C6_ALPHA
    assert sum(alpha) / len(alpha) == pytest.approx(1.0, abs=1e-12)


def test_class_alpha_zero_count_names_the_class():
    with pytest.raises(ValueError, match="class 5"):
        losses.class_alpha([10, 20, 30, 40, 50, 0, 70, 80])


def test_gamma_zero_without_alpha_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(32, 8) * 3, torch.randint(0, 8, (32,))
    focal = losses.FocalLoss(gamma=0.0)(logits, target)
    assert torch.allclose(focal, F.cross_entropy(logits, target), atol=1e-6, rtol=0)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_per_sample_formula(gamma):
    torch.manual_seed(1)
    logits, target = torch.randn(16, 8, dtype=torch.float64) * 2, torch.randint(0, 8, (16,))
    alpha = torch.tensor(APP_C6_ALPHA, dtype=torch.float64)
    p = logits.softmax(dim=1)[torch.arange(16), target]
    expected = (-alpha[target] * (1 - p) ** gamma * p.log()).mean()  # plain mean over the batch
    for given in (APP_C6_ALPHA, alpha):  # a sequence or a tensor
        loss = losses.FocalLoss(gamma=gamma, alpha=given)(logits, target)
        assert torch.allclose(loss, expected, atol=1e-7, rtol=0)


def test_gradcheck_float64():
    torch.manual_seed(2)
    logits = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 5, 7])
    loss = losses.FocalLoss(gamma=2.0, alpha=APP_C6_ALPHA).double()
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))


def test_finite_on_huge_fp16_logits():
    target = torch.tensor([0, 1, 2, 3])
    # Target logit far below the rest (loss ~2e4) and far above (p_y rounds to 1): both must stay finite.
    logits = torch.full((4, 8), 1e4, dtype=torch.float16)
    logits[0, 0] = logits[1, 2] = -1e4
    logits[2] = -1e4
    logits[2, 2] = 1e4
    logits.requires_grad_(True)
    loss_fn = losses.FocalLoss(gamma=2.0, alpha=APP_C6_ALPHA)
    for amp in (False, True):
        with models.autocast("cpu", enabled=amp):
            loss = loss_fn(logits, target)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
    assert loss.item() > 1e3  # the hard sample really counts


def test_alpha_is_a_buffer_that_follows_to():
    loss = losses.FocalLoss(alpha=APP_C6_ALPHA)
    assert "alpha" in dict(loss.named_buffers())
    assert loss.to(torch.float64).alpha.dtype == torch.float64
    assert losses.FocalLoss().alpha is None
