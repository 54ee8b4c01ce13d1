"""Reading ``fairseq-generate`` output and scoring it with sacreBLEU, refusing incomplete hypothesis sets.

fairseq-generate can silently drop sentences (e.g. the remainder of the last batch when
``--required-batch-size-multiple`` > 1), which would inflate or deflate a score without anyone noticing.
:func:`read_generate_output` therefore returns hypotheses in sentence-id order and :func:`check_coverage` refuses a
set whose ids do not cover every reference line.
"""
import re
from typing import Dict, List

_LINE = re.compile(r"^(?P<kind>[HD])-(?P<id>\d+)\t(?P<score>[^\t]*)\t?(?P<text>.*)$")


class IncompleteHypothesesError(ValueError):
    pass


def read_generate_output(path: str, kind: str = "D") -> Dict[int, str]:
    """Map sentence id -> text of the ``D-`` (detokenized) or ``H-`` lines of a fairseq-generate log."""
    hyps = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if m and m.group("kind") == kind:
                hyps[int(m.group("id"))] = m.group("text")
    return hyps


def check_coverage(hyps: Dict[int, str], n_refs: int, source: str = "hypotheses") -> List[str]:
    """Hypotheses as a list aligned with references 0..n_refs-1; raises if an id is missing or out of range."""
    missing = [i for i in range(n_refs) if i not in hyps]
    extra = [i for i in hyps if i >= n_refs]
    if missing or extra:
        raise IncompleteHypothesesError(
            f"{source}: {len(hyps)} hypotheses for {n_refs} references; missing ids {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, ids beyond the references {extra[:10]}. "
            "Re-run fairseq-generate with --required-batch-size-multiple 1 and the right --gen-subset."
        )
    return [hyps[i] for i in range(n_refs)]


def sacrebleu_score(hypotheses: List[str], references: List[str], tokenize: str = "13a"):
    """Corpus sacreBLEU on detokenized text; returns ``(score_object, signature_string)``."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize)
    score = bleu.corpus_score(hypotheses, [references])
    return score, str(bleu.get_signature())
