"""The models the benchmark knows: one :class:`ModelSpec` each, in :data:`MODELS`.

A spec says how fairseq builds the model (task, architecture, flags) and how it is decoded (one or more
:class:`Decoding` s, each a set of fairseq generation flags). A *system* is a (model, decoding) pair: one row of the
results table. Every model is built at the same depth and width (:data:`SIZES`, the size flags are added to every
model's flags), so that the AR baseline and the NAR models differ only in how they decode.

Adding a model (e.g. BnB, ELMER, DEER, MLAE once they land) is one call::

    register(ModelSpec(
        name="bnb", kind="nar", task="translation_lev_ctc", arch="bnb_transformer_small",
        task_args=("--upsample-ratio", "2", "--noise", "no_noise"),
        decodings=(Decoding("1 pass", ("--iter-decode-max-iter", "0")),),
        length_control="frames", user_dir=True,
        description="BERT-NAR-BERT with a CTC output"))

``length_control`` says how the quick mode (random weights) forces the output length so that AR and NAR models
emit the same number of tokens (see :mod:`.systems`): ``"ar"`` (``SequenceGenerator`` with ``min_len = max_len``),
``"length_predictor"`` (a fairseq NAT decoder whose ``forward_length_prediction`` is overridden with the forced
length, after it has run), ``"length_classifier"`` (the same for a ``LengthClassifier`` at ``model.decoder.length``),
``"frames"`` (a CTC decoder: its frame count is fixed by the source length and nothing
is forced), ``"canvas"`` (a decoder whose output ends at its first ``</s>``, ELMER: ``model.force_output_lengths``
sets a canvas of the forced length + 1 and keeps that many predictions), or a callable
``hook(model, generator) -> LengthForcer`` for models that need their own way.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple, Union


@dataclass(frozen=True)
class Decoding:
    label: str  # short name shown in the table, e.g. "greedy", "beam 4", "10 it."
    args: Tuple[str, ...]  # fairseq generation flags


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "nar" or "ar"
    task: str
    arch: str
    decodings: Tuple[Decoding, ...]
    task_args: Tuple[str, ...] = ()
    model_args: Tuple[str, ...] = ()
    length_control: Union[str, Callable] = "length_predictor"
    user_dir: bool = False  # needs --user-dir fairseq_nar_plugins
    description: str = ""


@dataclass(frozen=True)
class Size:
    layers: int
    embed_dim: int
    heads: int
    ffn_dim: int

    def args(self) -> Tuple[str, ...]:
        out = []
        for side in ("encoder", "decoder"):
            out += [f"--{side}-layers", str(self.layers), f"--{side}-embed-dim", str(self.embed_dim),
                    f"--{side}-attention-heads", str(self.heads), f"--{side}-ffn-embed-dim", str(self.ffn_dim)]
        return tuple(out)

    def __str__(self):
        return f"{self.layers}+{self.layers} layers, {self.embed_dim} dims, {self.heads} heads, FFN {self.ffn_dim}"


SIZES: Dict[str, Size] = {
    "small": Size(3, 256, 4, 1024),  # the CPU size of the Multi30k recipe (nat_ctc_transformer_small)
    "base": Size(6, 512, 8, 2048),  # Transformer-base
    "tiny": Size(2, 64, 2, 128),  # tests
}

MODELS: Dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"benchmark model {spec.name!r} is already registered")
    if spec.kind not in ("nar", "ar"):
        raise ValueError(f"kind must be 'nar' or 'ar', got {spec.kind!r}")
    if not spec.decodings:
        raise ValueError(f"{spec.name}: at least one decoding is needed")
    MODELS[spec.name] = spec
    return spec


def get(names: Sequence[str]):
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise KeyError(f"unknown benchmark model(s) {unknown}; registered: {sorted(MODELS)}")
    return [MODELS[n] for n in names]


ONE_PASS = Decoding("1 pass", ("--iter-decode-max-iter", "0"))

register(ModelSpec(
    name="nat_ctc_transformer", kind="nar", task="translation_lev_ctc", arch="nat_ctc_transformer",
    task_args=("--upsample-ratio", "2", "--noise", "no_noise"), decodings=(ONE_PASS,),
    length_control="frames", user_dir=True,
    description="ours: CTC NAT, decoder over 2x source frames, greedy CTC collapse",
))
register(ModelSpec(
    name="bnb", kind="nar", task="translation_lev_ctc", arch="bnb_base",
    task_args=("--upsample-ratio", "2", "--noise", "full_mask"), model_args=("--length-mode", "ctc"),
    decodings=(ONE_PASS,), length_control="frames", user_dir=True,
    description="ours: BERT-NAR-BERT, latent z copied onto 2x source frames, CTC",
))
register(ModelSpec(
    name="bnb_lc", kind="nar", task="translation_lev", arch="bnb_base",
    task_args=("--noise", "full_mask"), model_args=("--length-mode", "lc"),
    decodings=(Decoding("length beam 1", ("--iter-decode-max-iter", "0")),
               Decoding("length beam 3", ("--iter-decode-max-iter", "0", "--iter-decode-with-beam", "3"))),
    length_control="length_classifier", user_dir=True,
    description="ours: BERT-NAR-BERT, output length classified from the latent z, one pass per candidate length",
))
register(ModelSpec(
    name="deer", kind="nar", task="translation_lev_ctc", arch="deer_base",
    task_args=("--upsample-ratio", "2", "--noise", "random_delete"),
    # step 0 is greedy CTC; --iter-decode-max-iter N adds up to N Levenshtein editor iterations (a row stops early
    # when an iteration changes nothing)
    decodings=(Decoding("CTC", ("--iter-decode-max-iter", "0")),
               Decoding("+1 edit", ("--iter-decode-max-iter", "1")),
               Decoding("+2 edits", ("--iter-decode-max-iter", "2")),
               Decoding("+4 edits", ("--iter-decode-max-iter", "4"))),
    length_control="frames", user_dir=True,
    description="ours: DEER, one BERT-family stack over [source ; 2x copied source slots], CTC step 0 then "
    "Levenshtein editor steps with cached source states",
))
register(ModelSpec(
    name="mlae_cmlm", kind="nar", task="translation_lev", arch="mlae_cmlm_12_4",
    task_args=("--noise", "random_mask"),
    decodings=(Decoding("1 it.", ("--iter-decode-max-iter", "0")),
               Decoding("10 it.", ("--iter-decode-max-iter", "9", "--iter-decode-force-max-iter"))),
    length_control="length_classifier", user_dir=True,
    description="ours: MLAE fine-tuned as a CMLM (mask-predict with the pretraining [MASK], repeats merged)",
))
register(ModelSpec(
    name="mlae_seq2seq", kind="ar", task="translation", arch="mlae_seq2seq_12_4",
    decodings=(Decoding("greedy", ("--beam", "1")), Decoding("beam 6", ("--beam", "6", "--lenpen", "1.0"))),
    length_control="ar", user_dir=True,
    description="ours: MLAE fine-tuned Seq2seq style (causal decoder, cross-attention from self-attention), "
    "incremental beam search",
))
register(ModelSpec(
    name="cmlm_transformer", kind="nar", task="translation_lev", arch="cmlm_transformer",
    task_args=("--noise", "random_mask"),
    decodings=(Decoding("1 it.", ("--iter-decode-max-iter", "0")),
               # max-iter 9 = 10 decoder passes; forced, so that every sentence gets all 10 (mask-predict's T=10)
               Decoding("10 it.", ("--iter-decode-max-iter", "9", "--iter-decode-force-max-iter"))),
    description="fairseq's mask-predict (Ghazvininejad et al. 2019)",
))
register(ModelSpec(
    name="nonautoregressive_transformer", kind="nar", task="translation_lev", arch="nonautoregressive_transformer",
    task_args=("--noise", "full_mask"), model_args=("--src-embedding-copy", "--pred-length-offset"),
    decodings=(ONE_PASS,),
    description="fairseq's vanilla NAT (Gu et al. 2018), flags of fairseq's NAT README",
))
register(ModelSpec(
    name="transformer", kind="ar", task="translation", arch="transformer",
    decodings=(Decoding("greedy", ("--beam", "1")), Decoding("beam 4", ("--beam", "4"))),
    length_control="ar",
    description="fairseq's autoregressive Transformer: the baseline",
))



register(ModelSpec(
    name="elmer", kind="nar", task="translation_lev", arch="elmer_base",
    task_args=("--noise", "full_mask"), model_args=("--exit-mode", "soft"),
    decodings=(Decoding("soft 1 pass", ("--iter-decode-max-iter", "0")),),
    length_control="canvas", user_dir=True,
    description="ours: ELMER with soft early exit (every layer predicts; its argmax embedding is fused into the next "
    "layer's input), output cut at the first </s>",
))
register(ModelSpec(
    name="elmer_hard", kind="nar", task="translation_lev", arch="elmer_base",
    task_args=("--noise", "full_mask"), model_args=("--exit-mode", "hard"),
    # the threshold is a model setting: each decoding applies its own --model-overrides (System.activate); with
    # random weights (quick mode) off-ramp entropies are near ln V and no token exits early
    decodings=tuple(Decoding(label, ("--iter-decode-max-iter", "0", "--model-overrides",
                                     f"{{'exit_threshold': {delta}}}"))
                    for label, delta in (("full depth", 0.0), ("exit 0.5", 0.5), ("exit 1.0", 1.0))),
    length_control="canvas", user_dir=True,
    description="ours: ELMER with hard early exit (a token leaves at the first layer whose off-ramp entropy is below "
    "the threshold; the loop stops when all have left, exited positions cost no query/FFN work)",
))

DEFAULT_QUICK_MODELS = ("nat_ctc_transformer", "cmlm_transformer", "nonautoregressive_transformer", "transformer")
