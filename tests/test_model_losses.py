"""Loss values against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from model import FusionLoss, dice_loss, focal_loss, image_labels


def test_focal_loss_hand_values():
    p = torch.tensor([0.9, 0.2, 0.6])
    y = torch.tensor([1.0, 0.0, 0.0])
    # -(1-p)^2 log p for the positive, -p^2 log(1-p) for the negatives
    expected = (0.1**2 * -math.log(0.9) + 0.2**2 * -math.log(0.8) + 0.6**2 * -math.log(0.4)) / 3
    assert focal_loss(p, y).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_gamma_zero_is_binary_cross_entropy():
    p = torch.tensor([0.3, 0.7])
    y = torch.tensor([1.0, 0.0])
    assert focal_loss(p, y, gamma=0.0).item() == pytest.approx((-math.log(0.3) - math.log(0.3)) / 2, rel=1e-6)


def test_focal_loss_is_finite_on_saturated_scores():
    loss = focal_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert torch.isfinite(loss)


def test_dice_loss_hand_values():
    p = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]], [[[0.2, 0.2], [0.2, 0.2]]]])
    y = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # image 1: intersection 1.5, sum p 1.75, sum y 2 -> 1 - (3 + 1) / (3.75 + 1)
    # image 2: empty mask -> 1 - 1 / (0.8 + 1)
    expected = ((1 - 4 / 4.75) + (1 - 1 / 1.8)) / 2
    assert dice_loss(p, y).item() == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_gives_zero_dice():
    y = torch.zeros(1, 1, 4, 4)
    y[..., :2, :2] = 1
    assert dice_loss(y, y).item() == pytest.approx(0.0, abs=1e-7)


def test_image_label_is_one_iff_mask_not_empty():
    m = torch.zeros(3, 1, 4, 4)
    m[1, 0, 2, 3] = 1
    assert image_labels(m).tolist() == [0.0, 1.0, 0.0]


def test_fusion_loss_total_and_parts():
    amap = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]], [[[0.2, 0.2], [0.2, 0.2]]]], requires_grad=True)
    out = {"anomaly_map": amap, "pred_score": amap.flatten(1).amax(1)}
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    parts = FusionLoss(focal_on="image")(out, mask[:, 0])  # (B, H, W) masks are accepted too
    focal = (0.0 + 0.2**2 * -math.log(0.8)) / 2  # score 1.0 on the anomalous image: clamped, ~0
    dice = ((1 - 4 / 4.75) + (1 - 1 / 1.8)) / 2
    assert parts.focal.item() == pytest.approx(focal, abs=1e-6)
    assert parts.dice.item() == pytest.approx(dice, rel=1e-6)
    assert parts.total.item() == pytest.approx(focal + dice, rel=1e-6)
    parts.total.backward()
    assert amap.grad is not None
    weighted = FusionLoss(w_img=2.0, w_seg=0.5, focal_on="image")(out, mask)
    assert weighted.total.item() == pytest.approx(2 * focal + 0.5 * dice, rel=1e-6)
    # The default: focal over every pixel against the mask (MediCLIP's code), by hand over the 8 pixels:
    # 0.5 and 1.0 anomalous, 0.0 and 0.25 normal, then four normal 0.2 (1.0 and 0.0 clamped: ~0).
    pixel_focal = (0.5**2 * -math.log(0.5) + 0.25**2 * -math.log(0.75) + 4 * 0.2**2 * -math.log(0.8)) / 8
    parts = FusionLoss()(out, mask)
    assert parts.focal.item() == pytest.approx(pixel_focal, rel=1e-5)
    assert parts.total.item() == pytest.approx(pixel_focal + dice, rel=1e-5)
    with pytest.raises(ValueError, match="focal_on"):
        FusionLoss(focal_on="max")


def test_fusion_loss_refuses_mismatched_mask():
    out = {"anomaly_map": torch.zeros(1, 1, 4, 4), "pred_score": torch.zeros(1)}
    with pytest.raises(ValueError, match="does not match"):
        FusionLoss()(out, torch.zeros(1, 1, 8, 8))


def test_clip_loss_is_the_dissertations_equation_2():
    from model import clip_loss

    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    vi = image / image.norm(dim=1, keepdim=True)
    vt = text / text.norm(dim=1, keepdim=True)
    sim = (vi @ vt.T).double() / 0.07
    # -1/(2N) sum_i [log softmax_j(sim_ij) at j=i + log softmax_j(sim_ji) at j=i], written out by hand
    hand = 0.0
    for i in range(6):
        hand += sim[i, i] - torch.logsumexp(sim[i], 0) + sim[i, i] - torch.logsumexp(sim[:, i], 0)
    assert clip_loss(image, text, 1 / 0.07).item() == pytest.approx(-hand.item() / 12, rel=1e-5)
    # label smoothing eps: the target puts 1 - eps + eps/N on the pair and eps/N on every other column
    eps = 0.1
    q = torch.full((6, 6), eps / 6, dtype=torch.float64) + (1 - eps) * torch.eye(6, dtype=torch.float64)
    smooth = -0.5 * ((q * sim.log_softmax(1)).sum() + (q * sim.T.log_softmax(1)).sum()) / 6
    assert clip_loss(image, text, 1 / 0.07, label_smoothing=eps).item() == pytest.approx(smooth.item(), rel=1e-5)
