"""Text-generation metrics as the papers report them, on plain hypothesis / reference lists.

Every function takes ``hypotheses`` (one string per segment) and ``references`` as a list of *reference streams*:
``references[k][i]`` is the k-th reference of segment ``i`` (sacreBLEU's convention; one stream for the usual single
reference). Scores are on a 0-100 scale.

* :func:`sacrebleu_corpus`: corpus sacreBLEU on detokenized text, with its signature (MT).
* :func:`rouge_f1`: ROUGE-1/2/L F1 with Google's ``rouge-score`` (Porter stemming on, as summarization papers report
  it), averaged over segments. ``rouge-score``'s tokenizer lowercases and keeps only ``[a-z0-9]`` runs, so it is
  meant for English: other scripts lose their non-ASCII letters.
* :func:`qg_bleu` and :func:`qg_rouge_l`: corpus BLEU-1..4 and ROUGE-L exactly as the question-generation papers
  compute them with Du et al.'s (2017) ``nqg/qgevalcap`` scripts, which are the MS-COCO caption evaluation code:

  - text is lowercased and tokenized (:func:`qg_tokenize`; Du et al.'s files are already both, and the scripts then
    only split on whitespace);
  - BLEU: n-gram counts clipped by the maximum count in any reference, summed over the corpus; brevity penalty from
    the *closest* reference length of each segment (ties go to the shorter one), ``exp(1 - r/c)`` if ``c < r``; no
    smoothing, only the scripts' guards ``(correct + 1e-15) / (guess + 1e-9)`` (so a corpus without a matching 4-gram
    gets BLEU-4 ~ 0, never an error);
  - ROUGE-L: per segment, LCS precision and recall against each reference, the maximum of each over the references,
    ``F = (1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``, averaged over segments;
  - optional grouping by source (:func:`group_by_source`): nqg keys hypotheses and references by the source sentence,
    so all questions asked about the same sentence become the references of one segment, and the hypothesis kept for
    that segment is the one of its *last* line. Pass the source file to reproduce the published numbers on Du et al.'s
    split (11,877 test lines -> 6,652 unique sentences); without it every line is one segment.

* :func:`distinct_n`: Distinct-n (Li et al. 2016): distinct n-grams / all n-grams over the whole hypothesis set.
* :func:`meteor`: METEOR 1.5 as coco-caption and nqg run it (``java -jar meteor-1.5.jar - - -stdio -l en -norm``), a
  corpus score from the summed sufficient statistics of all segments. The jar and its English data (WordNet
  synonyms inside the jar, the paraphrase table beside it) come from the PyPI package ``pycocoevalcap``; it needs a
  Java runtime. Without either, :class:`MetricUnavailable` says why and reports print "not computed (reason)".
"""
import importlib.util
import math
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

QG_TOKENIZERS = ("space", "13a")
ALL_METRICS = ("sacrebleu", "rouge", "qg", "distinct", "meteor")


class LineCountMismatchError(ValueError):
    pass


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed on this machine (missing package, data or runtime); the message says why."""


@dataclass
class MetricResult:
    """One reported number (``score`` on a 0-100 scale), or ``score=None`` with ``reason`` when not computed."""

    name: str
    score: Optional[float]
    detail: str = ""
    reason: str = ""
    extra: Dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        if self.score is None:
            return f"{self.name}: not computed ({self.reason})"
        return f"{self.name}: {self.score:.2f}" + (f"  {self.detail}" if self.detail else "")


# ----------------------------------------------------------------------------------------------------------------
# input


def read_lines(path: str) -> List[str]:
    """Segments of a plain-text file, one a line. Only ``\\n`` separates lines (a trailing ``\\r`` is dropped), so
    the count agrees with ``wc -l`` and with sacreBLEU."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\r\n") for line in f]


def check_line_counts(named: Sequence[Tuple[str, Sequence[str]]]) -> None:
    """Raise :class:`LineCountMismatchError` naming every file and its count unless all have the same length.

    ``named``: ``(description, lines)`` pairs, e.g. ``[("hypotheses hyp.txt", hyps), ("reference ref.txt", refs)]``.
    """
    counts = [(name, len(lines)) for name, lines in named]
    if len({n for _, n in counts}) > 1:
        first_name, first_n = counts[0]
        others = ", ".join(f"{name} has {n}" for name, n in counts[1:])
        raise LineCountMismatchError(
            f"line counts differ: {first_name} has {first_n} lines but {others}. Every file must hold one segment "
            "a line, in the same order."
        )


def _check_streams(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if not references:
        raise ValueError("no reference stream given")
    check_line_counts([("hypotheses", hypotheses)] + [(f"reference stream {k + 1}", r) for k, r in
                                                      enumerate(references)])


def _per_segment_refs(references: Sequence[Sequence[str]]) -> List[List[str]]:
    return [list(refs) for refs in zip(*references)]


# ----------------------------------------------------------------------------------------------------------------
# sacreBLEU


def sacrebleu_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]], tokenize: str = "13a"
                     ) -> MetricResult:
    """Corpus sacreBLEU (default 13a tokenization, exponential smoothing) on detokenized text, with its signature."""
    from sacrebleu.metrics import BLEU

    _check_streams(hypotheses, references)
    bleu = BLEU(tokenize=tokenize)
    score = bleu.corpus_score(list(hypotheses), [list(r) for r in references])
    signature = str(bleu.get_signature())
    return MetricResult("sacreBLEU", score.score, detail=f"({score}) signature: {signature}",
                        extra={"bp": score.bp, "sys_len": score.sys_len, "ref_len": score.ref_len})


def chrf_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2, no word n-grams) with its signature."""
    from sacrebleu.metrics import CHRF

    _check_streams(hypotheses, references)
    chrf = CHRF()
    score = chrf.corpus_score(list(hypotheses), [list(r) for r in references])
    return MetricResult("chrF", score.score, detail=f"({score}) signature: {chrf.get_signature()}")


# ----------------------------------------------------------------------------------------------------------------
# ROUGE (rouge-score)


def rouge_f1(hypotheses: Sequence[str], references: Sequence[Sequence[str]], use_stemmer: bool = True
             ) -> Dict[str, float]:
    """Mean over segments of ROUGE-1/2/L F1 (x100) from ``rouge-score``; with several references, a segment's F1 is
    the best over them (``RougeScorer.score_multi``). Returns ``{"rouge1": .., "rouge2": .., "rougeL": ..}``."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MetricUnavailable("the rouge-score package is not installed: pip install rouge-score") from e
    _check_streams(hypotheses, references)
    types = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    totals = dict.fromkeys(types, 0.0)
    refs_per_seg = _per_segment_refs(references)
    for hyp, refs in zip(hypotheses, refs_per_seg):
        scores = scorer.score(refs[0], hyp) if len(refs) == 1 else scorer.score_multi(refs, hyp)
        for t in types:
            totals[t] += scores[t].fmeasure
    n = max(len(hypotheses), 1)
    return {t: 100.0 * totals[t] / n for t in types}


# ----------------------------------------------------------------------------------------------------------------
# question generation: nqg / coco-caption BLEU and ROUGE-L


def qg_tokenize(text: str, tokenizer: str = "space") -> List[str]:
    """Lowercase, then tokenize: ``space`` splits on whitespace (for text that is already tokenized, like Du et al.'s
    files and what nqg's scripts assume); ``13a`` first applies sacreBLEU's mteval-v13a tokenizer (for detokenized
    system output)."""
    text = text.lower()
    if tokenizer == "13a":
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        text = Tokenizer13a()(text)
    elif tokenizer != "space":
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose from {QG_TOKENIZERS}")
    return text.split()


def group_by_source(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[Sequence[str]]
                    ) -> Tuple[List[str], List[List[str]]]:
    """nqg's grouping: one segment per distinct source line (first-appearance order), whose references are all the
    references of the lines with that source and whose hypothesis is the one of its last line.

    Returns ``(hypotheses, references_per_segment)``; note the per-segment layout of the references (segments may
    have different numbers of references)."""
    check_line_counts([("sources", sources), ("hypotheses", hypotheses)] +
                      [(f"reference stream {k + 1}", r) for k, r in enumerate(references)])
    hyp_of: Dict[str, str] = {}
    refs_of: Dict[str, List[str]] = {}
    for i, src in enumerate(sources):
        hyp_of[src] = hypotheses[i]
        refs_of.setdefault(src, []).extend(r[i] for r in references)
    keys = list(refs_of)
    return [hyp_of[k] for k in keys], [refs_of[k] for k in keys]


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i:i + k])] += 1
    return counts


def qg_bleu(hyp_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]], n: int = 4
            ) -> List[float]:
    """Corpus BLEU-1..n (x100) as coco-caption's ``BleuScorer.compute_score(option='closest')``, which nqg uses.

    ``hyp_tokens[i]``: tokens of segment i; ``ref_tokens[i]``: list of token lists, the references of segment i."""
    if len(hyp_tokens) != len(ref_tokens):
        raise LineCountMismatchError(f"{len(hyp_tokens)} hypotheses but {len(ref_tokens)} reference sets")
    small, tiny = 1e-9, 1e-15
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, refs in zip(hyp_tokens, ref_tokens):
        if not refs:
            raise ValueError("a segment has no reference")
        max_ref_counts: Counter = Counter()
        for ref in refs:
            for gram, c in _ngram_counts(ref, n).items():
                max_ref_counts[gram] = max(max_ref_counts[gram], c)
        hyp_len = len(hyp)
        test_len += hyp_len
        ref_len += min((abs(len(r) - hyp_len), len(r)) for r in refs)[1]  # closest; ties: the shorter
        for k in range(1, n + 1):
            guess[k - 1] += max(0, hyp_len - k + 1)
        for gram, c in _ngram_counts(hyp, n).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), c)
    bleus, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        bleus.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return [100.0 * b for b in bleus]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def qg_rouge_l(hyp_tokens: Sequence[Sequence[str]], ref_tokens: Sequence[Sequence[Sequence[str]]], beta: float = 1.2
               ) -> float:
    """Mean over segments of coco-caption's ROUGE-L (x100): max LCS precision and max LCS recall over the references,
    combined with ``beta = 1.2``. An empty hypothesis scores 0."""
    if len(hyp_tokens) != len(ref_tokens):
        raise LineCountMismatchError(f"{len(hyp_tokens)} hypotheses but {len(ref_tokens)} reference sets")
    total = 0.0
    for hyp, refs in zip(hyp_tokens, ref_tokens):
        precs, recs = [], []
        for ref in refs:
            lcs = lcs_length(ref, hyp)
            precs.append(lcs / len(hyp) if hyp else 0.0)
            recs.append(lcs / len(ref) if ref else 0.0)
        p, r = max(precs), max(recs)
        if p and r:
            total += (1 + beta ** 2) * p * r / (r + beta ** 2 * p)
    return 100.0 * total / max(len(hyp_tokens), 1)


# ----------------------------------------------------------------------------------------------------------------
# Distinct-n


def distinct_n(hyp_tokens: Sequence[Sequence[str]], n: int) -> Optional[float]:
    """Distinct-n (x100): number of distinct n-grams over all hypotheses / number of n-grams over all hypotheses
    (corpus level, Li et al. 2016). ``None`` when the hypotheses hold no n-gram at all."""
    total, seen = 0, set()
    for tokens in hyp_tokens:
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return 100.0 * len(seen) / total if total else None


# ----------------------------------------------------------------------------------------------------------------
# METEOR 1.5 (jar shipped by pycocoevalcap)


def meteor_jar() -> str:
    """Path of ``meteor-1.5.jar`` from the installed ``pycocoevalcap`` package, after checking that Java runs it.

    Raises :class:`MetricUnavailable` with the reason otherwise."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None:
        raise MetricUnavailable(
            "its data is not installed: METEOR 1.5 and its English WordNet/paraphrase data come with the PyPI "
            "package pycocoevalcap (pip install pycocoevalcap); NLTK's METEOR needs WordNet, which no PyPI package "
            "ships"
        )
    jar = None
    for location in spec.submodule_search_locations or []:
        candidate = os.path.join(location, "meteor", "meteor-1.5.jar")
        if os.path.isfile(candidate):
            jar = candidate
    if jar is None:
        raise MetricUnavailable("pycocoevalcap is installed but its meteor/meteor-1.5.jar is missing")
    if not os.path.isfile(os.path.join(os.path.dirname(jar), "data", "paraphrase-en.gz")):
        raise MetricUnavailable("pycocoevalcap's meteor/data/paraphrase-en.gz is missing")
    if shutil.which("java") is None:
        raise MetricUnavailable("no Java runtime: METEOR 1.5 is a Java program (install a JRE, e.g. "
                                "apt-get install default-jre-headless)")
    return jar


def _meteor_clean(text: str) -> str:
    return " ".join(text.replace("|||", " ").split())


def meteor(hypotheses: Sequence[str], references_per_segment: Sequence[Sequence[str]], timeout: float = 3600,
           java_heap: str = "2G") -> Tuple[float, List[float]]:
    """Corpus METEOR 1.5 (x100) and per-segment scores, as coco-caption/nqg compute them: ``-l en -norm`` (the jar
    lowercases and tokenizes), one ``SCORE`` line per segment, then one ``EVAL`` over all segments' statistics.

    ``references_per_segment[i]``: the references of segment i (any number >= 1)."""
    jar = meteor_jar()
    if len(hypotheses) != len(references_per_segment):
        raise LineCountMismatchError(
            f"{len(hypotheses)} hypotheses but {len(references_per_segment)} reference sets")
    if not hypotheses:
        raise ValueError("no segments to score")
    lines = [
        "SCORE ||| " + " ||| ".join(_meteor_clean(r) for r in refs) + " ||| " + _meteor_clean(hyp)
        for hyp, refs in zip(hypotheses, references_per_segment)
    ]
    proc = subprocess.Popen(
        ["java", f"-Xmx{java_heap}", "-jar", jar, "-", "-", "-stdio", "-l", "en", "-norm"],
        cwd=os.path.dirname(jar), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8",
    )
    try:
        stats = []
        for line in lines:  # one request, one answer: the pipe never fills up
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
            if not answer:
                raise RuntimeError(f"METEOR stopped: {proc.stderr.read()[-2000:]}")
            stats.append(answer.strip())
        proc.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        proc.stdin.flush()
        seg_scores = [float(proc.stdout.readline()) for _ in stats]
        corpus = float(proc.stdout.readline())
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
    return 100.0 * corpus, [100.0 * s for s in seg_scores]


# ----------------------------------------------------------------------------------------------------------------
# everything at once


def evaluate(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ALL_METRICS,
    sacrebleu_tokenize: str = "13a",
    word_tokenizer: str = "space",
    qg_sources: Optional[Sequence[str]] = None,
    rouge_stemmer: bool = True,
    language: str = "en",
) -> List[MetricResult]:
    """Compute ``metrics`` (names from :data:`ALL_METRICS`); a metric that cannot run here comes back with
    ``score=None`` and its reason. ``word_tokenizer`` (see :func:`qg_tokenize`) applies to the QG metrics and
    Distinct-n; ``qg_sources`` turns on nqg's grouping by source sentence for the QG metrics and METEOR.
    ``language``: of the hypotheses; METEOR is computed for English only (the only language whose data ships with
    pycocoevalcap), and ROUGE on other languages carries a warning about rouge-score's ASCII-only tokenizer."""
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {ALL_METRICS}")
    _check_streams(hypotheses, references)
    results: List[MetricResult] = []
    if qg_sources is not None:
        qg_hyps, qg_refs = group_by_source(qg_sources, hypotheses, references)
        grouping = f"grouped by source: {len(qg_hyps)} segments"
    else:
        qg_hyps, qg_refs = list(hypotheses), _per_segment_refs(references)
        grouping = "one segment a line"
    if "sacrebleu" in metrics:
        results.append(sacrebleu_corpus(hypotheses, references, sacrebleu_tokenize))
    if "rouge" in metrics:
        try:
            r = rouge_f1(hypotheses, references, use_stemmer=rouge_stemmer)
            how = f"rouge-score, F1 averaged over segments, {'Porter stemming' if rouge_stemmer else 'no stemming'}"
            if language != "en":
                how += (f"; WARNING: rouge-score is English-only (its tokenizer keeps a-z0-9 runs, its stemmer is "
                        f"Porter's): {language} letters outside a-z are dropped")
            results += [MetricResult("ROUGE-1", r["rouge1"], f"({how})"),
                        MetricResult("ROUGE-2", r["rouge2"], f"({how})"),
                        MetricResult("ROUGE-L", r["rougeL"], f"({how})")]
        except MetricUnavailable as e:
            results.append(MetricResult("ROUGE-1/2/L", None, reason=str(e)))
    if "qg" in metrics:
        h_tok = [qg_tokenize(h, word_tokenizer) for h in qg_hyps]
        r_tok = [[qg_tokenize(r, word_tokenizer) for r in refs] for refs in qg_refs]
        how = f"(nqg/coco-caption, lowercased, tok:{word_tokenizer}, {grouping})"
        bleus = qg_bleu(h_tok, r_tok)
        results.append(MetricResult("QG BLEU-4", bleus[3], f"BLEU-1/2/3 {bleus[0]:.2f}/{bleus[1]:.2f}/{bleus[2]:.2f} "
                                    + how, extra={f"bleu{k + 1}": b for k, b in enumerate(bleus)}))
        results.append(MetricResult("QG ROUGE-L", qg_rouge_l(h_tok, r_tok), "(beta 1.2, " + how[1:]))
    if "distinct" in metrics:
        h_tok = [qg_tokenize(h, word_tokenizer) for h in hypotheses]
        for n in (1, 2):
            value = distinct_n(h_tok, n)
            how = f"(% distinct {n}-grams over all hypotheses, lowercased, tok:{word_tokenizer})"
            results.append(MetricResult(f"Distinct-{n}", value, how) if value is not None
                           else MetricResult(f"Distinct-{n}", None, reason=f"the hypotheses contain no {n}-gram"))
    if "meteor" in metrics and language != "en":
        results.append(MetricResult("METEOR", None, reason=f"language {language!r}: only METEOR's English data ships "
                                                           "with pycocoevalcap"))
    elif "meteor" in metrics:
        try:
            score, _ = meteor(qg_hyps, qg_refs)
            results.append(MetricResult("METEOR", score, f"(METEOR 1.5 -l en -norm as coco-caption/nqg, {grouping})"))
        except MetricUnavailable as e:
            results.append(MetricResult("METEOR", None, reason=str(e)))
    return results
