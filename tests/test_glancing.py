"""CTC Viterbi alignment against brute force; glancing reveals exactly the allowed number of aligned frames."""
import itertools

import pytest
import torch

from fairseq_nar_plugins.modules.ctc.ctc_alignment import ctc_best_alignment
from fairseq_nar_plugins.modules.ctc.glancing import GlancingSchedule, glancing_mask
from test_ctc_utils import BLANK, collapse


def brute_force_best_path(lprobs, target):
    best, best_path = float("-inf"), None
    T, V = lprobs.shape
    for path in itertools.product(range(V), repeat=T):
        if collapse(path) == list(target):
            s = sum(lprobs[t, p].item() for t, p in enumerate(path))
            if s > best:
                best, best_path = s, list(path)
    return best, best_path


@pytest.mark.parametrize("target,frames", [([1], 3), ([1, 2], 4), ([2, 2], 4), ([1, 2, 1], 5), ([3, 3], 5), ([], 2)])
def test_viterbi_alignment_is_the_best_path(target, frames):
    torch.manual_seed(frames * 7 + len(target))
    lprobs = torch.randn(1, frames, 4, dtype=torch.float64).log_softmax(-1)
    tgt = torch.tensor([target + [0]])[:, : max(len(target), 1)] if target else torch.zeros(1, 1, dtype=torch.long)
    tgt_pad = torch.zeros_like(tgt, dtype=bool) if target else torch.ones(1, 1, dtype=bool)
    alignment, score = ctc_best_alignment(lprobs, torch.zeros(1, frames, dtype=bool), tgt, tgt_pad, BLANK)
    expected_score, expected_path = brute_force_best_path(lprobs[0], target)
    assert score.item() == pytest.approx(expected_score, rel=1e-6)
    assert alignment[0].tolist() == expected_path
    assert collapse(alignment[0].tolist()) == target


def test_viterbi_batch_with_padding_and_unalignable_row():
    torch.manual_seed(3)
    lprobs = torch.randn(3, 5, 4, dtype=torch.float64).log_softmax(-1)
    frame_pad = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]], dtype=bool)
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [1, 1, 0]])
    tgt_pad = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=bool)
    alignment, score = ctc_best_alignment(lprobs, frame_pad, targets, tgt_pad, BLANK)
    s0, p0 = brute_force_best_path(lprobs[0], [1, 2, 2])
    s1, p1 = brute_force_best_path(lprobs[1, :3], [3, 1])
    assert alignment[0].tolist() == p0 and score[0].item() == pytest.approx(s0)
    assert alignment[1, :3].tolist() == p1 and alignment[1, 3:].tolist() == [BLANK, BLANK]
    assert score[1].item() == pytest.approx(s1)
    assert score[2].item() == float("-inf") and alignment[2].tolist() == [BLANK] * 5  # [1,1] needs 3 frames, has 2


def test_glancing_reveals_round_ratio_times_mismatches_among_real_frames():
    g = torch.Generator().manual_seed(0)
    alignment = torch.tensor([[1, 0, 2, 2, 3, 0, 0, 0], [4, 4, 0, 5, 0, 0, 0, 0]])
    prediction = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [4, 4, 0, 5, 0, 0, 9, 9]])
    frame_pad = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1]], dtype=bool)
    # row 0: 5 mismatches at real frames; row 1: 0 (mismatches at padding do not count)
    for ratio, expected in ((0.5, [2, 0]), (1.0, [5, 0]), (0.0, [0, 0]), (0.3, [2, 0])):
        for _ in range(20):
            mask = glancing_mask(alignment, prediction, frame_pad, ratio, generator=g)
            assert mask.sum(1).tolist() == expected
            assert not (mask & frame_pad).any()


def test_glancing_choice_is_uniform_over_real_frames():
    g = torch.Generator().manual_seed(1)
    alignment = torch.zeros(1, 6, dtype=torch.long)
    prediction = torch.ones(1, 6, dtype=torch.long)
    frame_pad = torch.tensor([[0, 0, 0, 0, 1, 1]], dtype=bool)
    counts = torch.zeros(6)
    for _ in range(2000):
        counts += glancing_mask(alignment, prediction, frame_pad, 0.5, generator=g)[0].float()
    # 4 mismatches * 0.5 = 2 reveals among 4 real frames: each frame chosen half the time
    assert counts[4:].sum() == 0
    assert torch.allclose(counts[:4] / 2000, torch.full((4,), 0.5), atol=0.05)


def test_schedule_parsing_and_annealing():
    s = GlancingSchedule("0.5:0.2@300k")
    assert (s.start, s.end, s.steps) == (0.5, 0.2, 300_000)
    assert s(0) == 0.5 and s(150_000) == pytest.approx(0.35) and s(300_000) == 0.2 and s(10**7) == 0.2
    assert GlancingSchedule("0.3")(123) == 0.3
    with pytest.raises(ValueError, match="START:END@STEPS"):
        GlancingSchedule("half")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        GlancingSchedule("1.5:0.2@10")
