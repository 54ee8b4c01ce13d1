"""Each corruption of modules/corruption against its definition in the papers (000 BnB, 001 ELMER, 003 MLAE):
rates over many seeded draws, the 80/10/10 split, span lengths and span-based selection, permutations that keep the
tokens, one mask per infilled span, whole-sentence shuffling, protected ids, determinism, and exact agreement with
fairseq's DenoisingDataset (BART) where the definitions coincide."""
import math
from functools import partial

import pytest
import torch
from fairseq.data import DenoisingDataset, Dictionary

from fairseq_nar_plugins.modules.corruption import (
    CORRUPTIONS,
    compose,
    mask_tokens,
    permute_tokens,
    poisson_span_distribution,
    random_segmentation,
    sample_span_lengths,
    sentence_bounds,
    shuffle_sentences,
    span_mask,
    text_infill,
)

BOS, PAD, EOS, UNK, MASK, DOT = 0, 1, 2, 3, 4, 5
PROTECTED = {BOS, PAD, EOS, MASK}
RANDOM_IDS = list(range(1000, 1100))  # disjoint from the content ids, so a random replacement is recognisable


def block(n_content, first_id=10):
    """<s> + n_content distinct content ids + </s>."""
    return torch.cat([torch.tensor([BOS]), torch.arange(first_id, first_id + n_content), torch.tensor([EOS])])


def gen(seed):
    return torch.Generator().manual_seed(seed)


def runs(mask):
    """Lengths of the maximal runs of True in a 1-D bool tensor."""
    out, cur = [], 0
    for v in mask.tolist() + [False]:
        if v:
            cur += 1
        elif cur:
            out.append(cur)
            cur = 0
    return out


# ---------------------------------------------------------------------------------------------- token masking (BERT)

def test_mask_tokens_rate_and_80_10_10_split():
    tokens = block(203)  # 0.15 * 203 = 30.45 tokens selected on average
    draws, kinds, per_position = 2000, {"mask": 0, "random": 0, "kept": 0}, torch.zeros(tokens.numel())
    counts = []
    for seed in range(draws):
        r = mask_tokens(tokens, gen(seed), mask_idx=MASK, random_ids=RANDOM_IDS, protected=PROTECTED)
        sel = r.corrupted
        counts.append(int(sel.sum()))
        per_position += sel.float()
        out = r.tokens[sel]
        kinds["mask"] += int((out == MASK).sum())
        kinds["random"] += int((out >= 1000).sum())
        kinds["kept"] += int((out == tokens[sel]).sum())
        assert torch.equal(r.tokens[~sel], tokens[~sel])  # unselected tokens untouched
        assert torch.equal(r.origin, torch.arange(tokens.numel()))
    total = sum(counts)
    assert set(counts) <= {30, 31}  # floor(30.45 + u)
    assert sum(counts) / draws == pytest.approx(30.45, abs=0.05)
    assert kinds["mask"] + kinds["random"] + kinds["kept"] == total
    assert kinds["mask"] / total == pytest.approx(0.8, abs=0.01)
    assert kinds["random"] / total == pytest.approx(0.1, abs=0.008)
    assert kinds["kept"] / total == pytest.approx(0.1, abs=0.008)
    freq = per_position[1:-1] / draws  # uniform selection: every content position near 15 %
    assert (freq - 0.15).abs().max() < 0.04
    assert per_position[0] == 0 and per_position[-1] == 0  # <s>, </s> protected


def test_mask_tokens_refuses_random_replacement_without_ids():
    with pytest.raises(ValueError, match="random_ids"):
        mask_tokens(block(10), gen(0), mask_idx=MASK, protected=PROTECTED)
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(block(10), gen(0), mask_idx=MASK, rate=1.5, random_token_prob=0.0, protected=PROTECTED)
    with pytest.raises(TypeError, match="1-D LongTensor"):
        mask_tokens(block(10)[None], gen(0), mask_idx=MASK, random_token_prob=0.0)


# ---------------------------------------------------------------------------------------------- span masking (MLAE)

def test_random_segmentation_is_a_composition():
    for seed in range(50):
        parts = random_segmentation(45, 15, gen(seed))
        assert parts.numel() == 15 and int(parts.sum()) == 45 and int(parts.min()) >= 1


def test_span_mask_rate_mean_span_three_and_span_selection():
    tokens = block(300)
    lengths, per_position = [], torch.zeros(tokens.numel())
    for seed in range(400):
        r = span_mask(tokens, gen(seed), mask_idx=MASK, protected=PROTECTED)
        assert int(r.corrupted.sum()) == 45  # round(0.15 * 300)
        spans = runs(r.corrupted)
        assert len(spans) == 15  # round(45 / 3) spans that never touch
        lengths += spans
        assert torch.equal(r.tokens[r.corrupted], torch.full((45,), MASK))
        assert torch.equal(r.tokens[~r.corrupted], tokens[~r.corrupted])
        per_position += r.corrupted.float()
    lengths = torch.tensor(lengths, dtype=torch.float)
    assert lengths.mean().item() == pytest.approx(3.0, abs=1e-6)
    assert lengths.min() == 1 and lengths.max() >= 8  # random lengths, not all 3
    assert (lengths == 1).float().mean() > 0.2  # spread like a geometric law of mean 3, not fixed
    freq = per_position[1:-1] / 400
    # spans are placed uniformly: an end position is masked only when a span starts (or ends) on it, with
    # probability K / (clean + 1) = 15 / 256 at both ends (T5's layout would always mask the last one)
    assert freq[0] == pytest.approx(15 / 256, abs=0.03) and freq[-1] == pytest.approx(15 / 256, abs=0.03)
    assert (freq[10:-10] - 0.15).abs().mean() < 0.02


def test_span_mask_rounding_on_an_odd_length():
    r = span_mask(block(101), gen(3), mask_idx=MASK, protected=PROTECTED)
    assert int(r.corrupted.sum()) == 15 and len(runs(r.corrupted)) == 5  # round(15.15), round(15 / 3)


# ---------------------------------------------------------------------------------------------- permutation (BnB)

def test_permute_tokens_keeps_the_tokens_and_moves_half():
    tokens = block(200)
    moved = []
    for seed in range(500):
        r = permute_tokens(tokens, gen(seed), protected=PROTECTED)
        assert torch.equal(r.tokens, tokens[r.origin])
        assert torch.equal(r.tokens.sort().values, tokens.sort().values)  # same multiset
        assert torch.equal(r.corrupted, r.origin != torch.arange(tokens.numel()))
        assert r.tokens[0] == BOS and r.tokens[-1] == EOS
        moved.append(r.corrupted.float().sum().item() / 200)
    # k = floor(0.5 * 200 + u) = 100 selected; a random permutation of them has one fixed point on average
    assert sum(moved) / len(moved) == pytest.approx(0.5 - 1 / 200, abs=0.003)


def test_permute_tokens_follows_the_paper_rate_not_the_authors_code():
    r = permute_tokens(block(600), gen(0), protected=PROTECTED)  # default rate
    assert r.corrupted.float().mean().item() > 0.45  # the authors' code permuted 1/6 with duplicates


# ---------------------------------------------------------------------------------------------- sentence shuffling

def sentences_block(sentences):
    """<s> s1 </s> s2 </s> ... sK </s>: lines ending with </s>, the last line's </s> being the block's."""
    ids = [BOS]
    for s in sentences:
        ids += s + [EOS]
    return torch.tensor(ids)


def test_sentence_bounds_cut_after_runs_of_full_stops():
    t = torch.tensor([BOS, 10, 11, DOT, EOS, 12, DOT, 13, 14, EOS, 15, EOS])
    starts, ends = sentence_bounds(t, [EOS, DOT], PROTECTED)
    assert list(zip(starts.tolist(), ends.tolist())) == [(1, 5), (5, 7), (7, 10), (10, 11)]
    starts, ends = sentence_bounds(torch.tensor([10, 11, DOT, 12]), [DOT], PROTECTED)  # no specials at the ends
    assert list(zip(starts.tolist(), ends.tolist())) == [(0, 3), (3, 4)]


def test_shuffle_permutes_whole_sentences_uniformly():
    sents = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
    tokens = sentences_block(sents)
    orders = {}
    for seed in range(1200):
        r = shuffle_sentences(tokens, gen(seed), full_stop_ids=[EOS], protected=PROTECTED)
        out = r.tokens.tolist()
        assert out[0] == BOS and out[-1] == EOS and len(out) == len(tokens)
        # the body is the original sentences (each with its </s>, the last one's being the block's) in some order
        starts, ends = sentence_bounds(tokens, [EOS], PROTECTED)
        pieces = [tokens[a:b].tolist() for a, b in zip(starts.tolist(), ends.tolist())]
        assert pieces == [[10, 11, 12, EOS], [20, 21, EOS], [30, 31, 32, 33]]
        body, order, pos = out[1:-1], [], 0
        while pos < len(body):
            for i, piece in enumerate(pieces):
                if body[pos: pos + len(piece)] == piece and i not in order:
                    order.append(i)
                    pos += len(piece)
                    break
            else:
                raise AssertionError(f"not a concatenation of whole sentences: {out}")
        orders[tuple(order)] = orders.get(tuple(order), 0) + 1
        # corrupted: the non-protected tokens of every sentence that left its slot
        expect = torch.zeros(len(tokens), dtype=torch.bool)
        for slot, i in enumerate(order):
            if slot != i:
                expect[int(starts[i]): int(ends[i])] = True
        expect &= ~torch.isin(tokens, torch.tensor(sorted(PROTECTED)))
        assert torch.equal(r.corrupted, expect)
    assert len(orders) == 6 and all(abs(c / 1200 - 1 / 6) < 0.04 for c in orders.values())


def _fairseq_denoiser(mask_idx_offset=200):
    d = Dictionary()
    for i in range(mask_idx_offset):
        d.add_symbol(f"w{i}")
    mask = d.add_symbol("<mask>")
    ds = DenoisingDataset(
        None, None, d, mask, None, shuffle=False, seed=1, mask=0.15, mask_random=0.0, insert=0.0, rotate=0.0,
        permute_sentences=1.0, bpe=None, replace_length=1, mask_length="span-poisson", poisson_lambda=3.0,
    )
    return d, mask, ds


def test_shuffle_is_fairseq_permute_sentences():
    d, mask, ds = _fairseq_denoiser()
    protected = {d.bos(), d.eos(), d.pad(), mask}
    for seed in range(150):
        g = gen(10_000 + seed)
        lines = [torch.randint(4, 204, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(2 + seed % 6)]
        tokens = torch.tensor([d.bos()] + sum((l + [d.eos()] for l in lines), [])[:-1] + [d.eos()])
        torch.manual_seed(seed)
        expected = ds.permute_sentences(tokens.clone(), 1.0)
        ours = shuffle_sentences(tokens, gen(seed), full_stop_ids=[d.eos()], protected=protected)
        assert torch.equal(ours.tokens, expected), seed


# ---------------------------------------------------------------------------------------------- text infilling

def test_poisson_span_distribution_is_fairseqs():
    _, _, ds = _fairseq_denoiser()
    assert torch.equal(poisson_span_distribution(3.0), ds.mask_span_distribution.probs)


def test_span_lengths_are_poisson_3_and_fill_the_budget():
    probs = poisson_span_distribution(3.0)
    lengths = []
    for seed in range(20):
        ls = sample_span_lengths(3000, probs, gen(seed))
        assert int(ls.sum()) == 3000
        lengths.append(ls[:-1])  # the last length is trimmed to the budget
    lengths = torch.cat(lengths)
    assert lengths.numel() > 15_000
    assert lengths.float().mean().item() == pytest.approx(3.0, abs=0.05)
    pmf = torch.bincount(lengths, minlength=probs.numel())[: probs.numel()].float() / lengths.numel()
    assert (pmf - probs).abs().max().item() < 0.01
    assert pmf[0].item() == pytest.approx(math.exp(-3), abs=0.006)  # zero-length spans (insertions)


def check_one_mask_per_span(tokens, r, mask_idx):
    """Structural definition of text infilling: output = input with each span (a run of covered tokens starting
    at a surviving span start) replaced by one mask, plus masks inserted for zero-length spans."""
    origin, out, covered = r.origin, r.tokens, r.corrupted
    kept = origin >= 0
    assert torch.equal(out[~kept], torch.full((int((~kept).sum()),), mask_idx))  # insertions are masks
    src = origin[kept]
    assert bool((src[1:] > src[:-1]).all())  # order preserved
    for j, i in zip(kept.nonzero().squeeze(1).tolist(), src.tolist()):
        assert (out[j] == mask_idx) == bool(covered[i])  # a covered token that survives is its span's one mask
        if not covered[i]:
            assert out[j] == tokens[i]
    # every input token is either output as itself, or the start (mask) of a span, or deleted inside a span that
    # starts at the closest surviving position before it
    present = torch.zeros(len(tokens), dtype=torch.bool)
    present[src] = True
    assert bool(covered[~present].all())  # only covered tokens are deleted
    for a, b in zip(src.tolist(), src.tolist()[1:] + [len(tokens)]):
        if b > a + 1:
            assert covered[a] and bool(covered[a + 1: b].all()), "deleted tokens must follow their span's mask"
    assert int((~kept).sum()) <= int((~present).sum())  # insertions never make the source longer


def test_infill_replaces_each_poisson_span_by_one_mask():
    tokens = block(400)
    fractions, inserted = [], 0
    for seed in range(300):
        original = tokens.clone()
        r = text_infill(tokens, gen(seed), mask_idx=MASK, protected=PROTECTED)
        assert torch.equal(tokens, original)  # the target (the input) is left intact
        check_one_mask_per_span(tokens, r, MASK)
        assert int(r.corrupted.sum()) <= 60  # ceil(0.15 * 400): overlapping spans merge, never exceed
        fractions.append(r.corrupted.float().sum().item() / 400)
        inserted += int((r.origin < 0).sum())
    mean = sum(fractions) / len(fractions)
    assert 0.135 < mean <= 0.15  # the 15 % budget, less what overlapping spans share
    assert inserted > 0  # zero-length spans happened and became inserted masks


def test_infill_is_fairseq_text_infilling():
    """Same random stream -> same output as DenoisingDataset.add_whole_word_mask (BART: --mask 0.15
    --mask-length span-poisson --poisson-lambda 3 --replace-length 1), insertions included."""
    d, mask, ds = _fairseq_denoiser()
    protected = {d.bos(), d.eos(), d.pad(), mask}
    with_inserts = 0
    for seed in range(200):
        g = gen(1000 + seed)
        n = 40 + seed % 300
        tokens = torch.randint(4, 204, (n,), generator=g)
        tokens[0], tokens[-1] = d.bos(), d.eos()
        if math.ceil(float(torch.tensor(float(n - 2)) * 0.15)) != math.ceil(round((n - 2) * 0.15, 6)):
            continue  # fairseq's float32 budget is one too large here (e.g. 100 * 0.15 -> 15.000001 -> 16)
        torch.manual_seed(seed)
        expected = ds.add_whole_word_mask(tokens.clone(), 0.15)
        ours = text_infill(tokens, gen(seed), mask_idx=mask, protected=protected)
        assert torch.equal(ours.tokens, expected), seed
        with_inserts += bool((ours.origin < 0).any())
    assert with_inserts >= 5


def test_infill_spans_stop_at_protected_tokens():
    tokens = torch.cat([torch.tensor([BOS]), torch.arange(10, 30), torch.tensor([EOS]), torch.arange(30, 50),
                        torch.tensor([EOS])])
    for seed in range(300):
        r = text_infill(tokens, gen(seed), mask_idx=MASK, rate=0.5, protected=PROTECTED)
        check_one_mask_per_span(tokens, r, MASK)
        assert not r.corrupted[21] and (r.origin == 21).sum() == 1  # the line's </s> survives, not in a span
        assert r.tokens[0] == BOS and r.tokens[-1] == EOS


# ---------------------------------------------------------------------------------------------- all corruptions

ALL = {
    "mask": partial(mask_tokens, mask_idx=MASK, rate=0.5, random_ids=RANDOM_IDS),
    "span": partial(span_mask, mask_idx=MASK, rate=0.5),
    "permute": partial(permute_tokens, rate=0.9),
    "shuffle": partial(shuffle_sentences, full_stop_ids=[EOS, DOT]),
    "infill": partial(text_infill, mask_idx=MASK, rate=0.5),
}


def test_every_corruption_is_registered():
    assert set(CORRUPTIONS) == set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_protected_ids_are_never_corrupted(name):
    for seed in range(100):
        g = gen(seed)
        tokens = torch.randint(10, 60, (80,), generator=g)
        special_pos = torch.randperm(78, generator=g)[:12] + 1
        tokens[special_pos] = torch.tensor([EOS, PAD, MASK, DOT] * 3)
        tokens[0], tokens[-1] = BOS, EOS
        r = ALL[name](tokens, gen(seed), protected=PROTECTED)
        is_protected = torch.isin(tokens, torch.tensor(sorted(PROTECTED)))
        assert not r.corrupted[is_protected].any()
        # no protected token is replaced or removed: each still appears once, unchanged
        for p in is_protected.nonzero().squeeze(1).tolist():
            where = (r.origin == p).nonzero().squeeze(1)
            assert where.numel() == 1 and r.tokens[where] == tokens[p], (name, p)
            if name in ("mask", "span", "permute"):
                assert int(where) == p  # token-level corruptions leave them in place
        assert r.tokens[0] == BOS and r.tokens[-1] == EOS


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_seed_same_corruption(name):
    tokens = torch.tensor([BOS] + [i if i % 10 else DOT for i in range(11, 90)] + [EOS])  # 8 sentences
    a, b = ALL[name](tokens, gen(7), protected=PROTECTED), ALL[name](tokens, gen(7), protected=PROTECTED)
    c = ALL[name](tokens, gen(8), protected=PROTECTED)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.corrupted, b.corrupted)
    assert not torch.equal(a.tokens, c.tokens)


def test_compose_expresses_everything_in_original_positions():
    tokens = torch.tensor([BOS] + list(range(10, 30)) + [EOS] + list(range(30, 45)) + [DOT] + list(range(45, 70))
                          + [EOS])
    chain = [partial(shuffle_sentences, full_stop_ids=[EOS, DOT], protected=PROTECTED),
             partial(text_infill, mask_idx=MASK, rate=0.3, protected=PROTECTED),
             partial(mask_tokens, mask_idx=MASK, rate=0.2, random_token_prob=0.0, protected=PROTECTED)]
    for seed in range(100):
        r = compose(tokens, chain, gen(seed))
        g = gen(seed)
        cur = tokens
        for fn in chain:  # replaying the chain by hand with the same generator gives the same tokens
            cur = fn(cur, g).tokens
        assert torch.equal(r.tokens, cur)
        for j, i in enumerate(r.origin.tolist()):
            if i >= 0 and not r.corrupted[i]:
                assert r.tokens[j] == tokens[i]  # an unmarked original token is visible in the source
            if r.tokens[j] == MASK and i >= 0:
                assert r.corrupted[i]  # every mask stands for marked original tokens
        present = torch.zeros(len(tokens), dtype=torch.bool)
        present[r.origin[r.origin >= 0]] = True
        assert bool(r.corrupted[~present].all())  # tokens missing from the source are marked
    assert torch.equal(compose(tokens, [], gen(0)).tokens, tokens)
