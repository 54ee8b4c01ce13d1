"""CTC utilities against their definitions: brute-force sums over alignments, hand-made logits."""
import itertools
import math

import pytest
import torch

from fairseq_nar_plugins.modules.ctc.ctc_utils import (
    add_bos_eos,
    ctc_greedy_collapse,
    ctc_loss,
    ctc_objective,
    ctc_required_frames,
    num_frames,
    strip_bos_eos,
    upsample_states,
)

BLANK = 0


def collapse(path, blank=BLANK):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def brute_force_nll(lprobs, target):
    """-log sum over all frame paths that collapse to target of prod_t p_t(path_t). lprobs: (T, V)."""
    T, V = lprobs.shape
    total = 0.0
    for path in itertools.product(range(V), repeat=T):
        if collapse(path) == list(target):
            total += math.exp(sum(lprobs[t, s].item() for t, s in enumerate(path)))
    return -math.log(total) if total > 0 else math.inf


@pytest.mark.parametrize(
    "target,frames",
    [([1], 3), ([1, 2], 4), ([2, 2], 4), ([1, 2, 1], 5), ([3, 3, 3], 5), ([1, 2, 3], 3), ([1, 1], 3)],
)
def test_ctc_loss_equals_brute_force_sum_over_alignments(target, frames):
    torch.manual_seed(len(target) * 10 + frames)
    V = 4
    lprobs = torch.randn(1, frames, V, dtype=torch.float64).log_softmax(-1)
    tgt = torch.tensor([target])
    loss, nll, inf = ctc_loss(lprobs, torch.zeros(1, frames, dtype=bool), tgt, torch.zeros_like(tgt, dtype=bool), BLANK)
    expected = brute_force_nll(lprobs[0], target)
    assert not inf.any()
    assert nll.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ctc_loss_batch_with_padding_matches_per_sentence():
    torch.manual_seed(0)
    V = 4
    lprobs = torch.randn(2, 5, V, dtype=torch.float64).log_softmax(-1)
    frame_pad = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=bool)
    targets = torch.tensor([[1, 2, 2], [3, 1, 9]])  # 9 = pad id in the second row
    tgt_pad = torch.tensor([[0, 0, 0], [0, 0, 1]], dtype=bool)
    _, nll, _ = ctc_loss(lprobs, frame_pad, targets, tgt_pad, BLANK)
    assert nll[0].item() == pytest.approx(brute_force_nll(lprobs[0], [1, 2, 2]), rel=1e-5)
    assert nll[1].item() == pytest.approx(brute_force_nll(lprobs[1, :3], [3, 1]), rel=1e-5)


def test_unalignable_target_is_flagged_and_has_zero_gradient():
    lprobs = torch.randn(2, 3, 4, dtype=torch.float64).log_softmax(-1).requires_grad_()
    targets = torch.tensor([[1, 1, 1], [1, 2, 0]])  # [1,1,1] needs 5 frames, has 3
    tgt_pad = torch.tensor([[0, 0, 0], [0, 0, 1]], dtype=bool)
    loss, nll, inf = ctc_loss(lprobs, torch.zeros(2, 3, dtype=bool), targets, tgt_pad, BLANK, label_smoothing=0.1)
    assert inf.tolist() == [True, False]
    assert nll[0].item() == 0.0 and math.isfinite(loss.sum().item())
    loss.sum().backward()
    assert torch.all(lprobs.grad[0] == 0) and torch.isfinite(lprobs.grad).all()


def test_label_smoothing_is_mean_negative_log_prob_over_real_frames():
    torch.manual_seed(1)
    lprobs = torch.randn(1, 4, 5, dtype=torch.float64).log_softmax(-1)
    frame_pad = torch.tensor([[0, 0, 0, 1]], dtype=bool)
    tgt = torch.tensor([[2, 3]])
    eps = 0.2
    loss, nll, _ = ctc_loss(lprobs, frame_pad, tgt, torch.zeros_like(tgt, dtype=bool), BLANK, label_smoothing=eps)
    smooth = -lprobs[0, :3].mean()
    assert loss.item() == pytest.approx((1 - eps) * nll.item() + eps * smooth.item(), rel=1e-6)


def _objective_batch():
    """Two sentences with padding frames and an unalignable third: lprobs (3, 5, 4) float64, masks, targets."""
    torch.manual_seed(3)
    lprobs = torch.randn(3, 5, 4, dtype=torch.float64).log_softmax(-1)
    frame_pad = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]], dtype=bool)
    targets = torch.tensor([[1, 2, 2], [3, 1, 9], [2, 2, 9]])  # row 2: [2, 2] needs 3 frames, has 2
    tgt_pad = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=bool)
    return lprobs, frame_pad, targets, tgt_pad


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ctc_objective_per_target_length_against_brute_force(eps):
    """target_length: mean over sentences of ((1 - eps) nll_b + eps mean_{real frames, v}(-log p)) / L_b; the
    unalignable sentence adds 0 (but counts in the mean over sentences, as in nat_loss)."""
    lprobs, frame_pad, targets, tgt_pad = _objective_batch()
    loss, nll, inf = ctc_objective(lprobs, frame_pad, targets, tgt_pad, BLANK, eps, "target_length")
    assert inf.tolist() == [False, False, True]
    per_sentence, nlls = [], []
    for b, (target, frames) in enumerate((([1, 2, 2], 5), ([3, 1], 3))):
        n = brute_force_nll(lprobs[b, :frames], target)
        uniform = -sum(lprobs[b, t, v].item() for t in range(frames) for v in range(4)) / (frames * 4)
        per_sentence.append(((1 - eps) * n + eps * uniform) / len(target))
        nlls.append(n / len(target))
    assert loss.item() == pytest.approx(sum(per_sentence) / 3, rel=1e-6)
    assert nll.item() == pytest.approx(sum(nlls) / 3, rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ctc_objective_per_frame_against_brute_force(eps):
    """frames (the DEER authors' form): (1 - eps) sum_b nll_b / sum_b F_b + eps mean over every real frame and
    symbol of -log p; the unalignable sentence is left out, its frames too."""
    lprobs, frame_pad, targets, tgt_pad = _objective_batch()
    loss, nll, _ = ctc_objective(lprobs, frame_pad, targets, tgt_pad, BLANK, eps, "frames")
    cases = (([1, 2, 2], 5), ([3, 1], 3))
    total_frames = sum(f for _, f in cases)
    nll_sum = sum(brute_force_nll(lprobs[b, :f], t) for b, (t, f) in enumerate(cases))
    log_p = [lprobs[b, t, v].item() for b, (_, f) in enumerate(cases) for t in range(f) for v in range(4)]
    expected = (1 - eps) * nll_sum / total_frames - eps * sum(log_p) / len(log_p)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert nll.item() == pytest.approx(nll_sum / total_frames, rel=1e-6)


def test_ctc_objective_refuses_an_unknown_normalisation():
    lprobs, frame_pad, targets, tgt_pad = _objective_batch()
    with pytest.raises(ValueError, match="--ctc-normalization"):
        ctc_objective(lprobs, frame_pad, targets, tgt_pad, BLANK, 0.1, "tokens")


def _one_hot_lprobs(paths, V=5):
    """Log-probs whose argmax follows each path (pad frames marked -1)."""
    B, T = len(paths), max(len(p) for p in paths)
    logits = torch.zeros(B, T, V)
    pad = torch.ones(B, T, dtype=bool)
    for b, p in enumerate(paths):
        for t, s in enumerate(p):
            logits[b, t, s] = 5.0 + t * 0.1  # distinct scores per frame
            pad[b, t] = False
    return logits.log_softmax(-1), pad


def test_greedy_collapse_merges_repeats_then_drops_blanks():
    PAD = 4
    lprobs, frame_pad = _one_hot_lprobs([[1, 1, 0, 1, 2, 2, 0], [0, 0, 3], [0, 0, 0, 0]])
    tokens, scores = ctc_greedy_collapse(lprobs, frame_pad, blank=0, pad=PAD)
    assert tokens.tolist() == [[1, 1, 2], [3, PAD, PAD], [PAD, PAD, PAD]]
    # score of a token = log-prob of the first frame of its run
    assert scores[0, 0].item() == pytest.approx(lprobs[0, 0, 1].item())
    assert scores[0, 1].item() == pytest.approx(lprobs[0, 3, 1].item())
    assert scores[0, 2].item() == pytest.approx(lprobs[0, 4, 2].item())
    assert scores[1, 0].item() == pytest.approx(lprobs[1, 2, 3].item())
    assert scores[2].tolist() == [0.0, 0.0, 0.0]


def test_greedy_collapse_ignores_padding_frames():
    lprobs, frame_pad = _one_hot_lprobs([[1, 2, 3]])
    frame_pad[0, 2] = True
    tokens, _ = ctc_greedy_collapse(lprobs, frame_pad, blank=0, pad=4)
    assert tokens.tolist() == [[1, 2]]


def test_required_frames_counts_blanks_between_repeats():
    assert ctc_required_frames([]) == 0
    assert ctc_required_frames([5, 6, 7]) == 3
    assert ctc_required_frames([5, 5, 7, 7, 7]) == 8


@pytest.mark.parametrize("left_pad", [True, False])
def test_upsample_states_copies_each_source_token_ratio_times(left_pad):
    states = torch.arange(1.0, 11.0).view(2, 5, 1)
    pad = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    if not left_pad:
        states = torch.tensor([[3.0, 4, 5, 0, 0], [6, 7, 8, 9, 10]]).unsqueeze(-1)
        pad = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    frames, frame_pad, _ = upsample_states(states, pad, 2)
    assert frames.shape == (2, 10, 1)
    assert frames[0, :6, 0].tolist() == [3, 3, 4, 4, 5, 5]
    assert frame_pad[0].tolist() == [False] * 6 + [True] * 4
    assert frames[1, :, 0].tolist() == [6, 6, 7, 7, 8, 8, 9, 9, 10, 10]
    assert not frame_pad[1].any()


def test_upsample_states_fractional_ratio():
    states = torch.arange(4.0).view(1, 4, 1)
    frames, frame_pad, idx = upsample_states(states, torch.zeros(1, 4, dtype=bool), 1.5)
    assert num_frames(torch.tensor([4]), 1.5).item() == 6
    assert idx[0].tolist() == [0, 0, 1, 2, 2, 3]  # frame j reads token floor(j / 1.5)


def test_strip_and_add_bos_eos_round_trip():
    BOS, PAD, EOS = 0, 1, 2
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]])
    stripped = strip_bos_eos(tgt, BOS, EOS, PAD)
    assert stripped.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    back, scores = add_bos_eos(stripped, torch.ones(2, 3), BOS, EOS, PAD)
    assert back.tolist() == tgt.tolist()
    assert scores[:, 0].tolist() == [0, 0] and scores[1, 2].item() == 0.0
