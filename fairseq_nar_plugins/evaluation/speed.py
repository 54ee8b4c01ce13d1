"""The speed protocol: interleaved, repeated timing of fairseq's own generation call, FLOP counting, and the
machine's matmul peak.

What is timed is exactly what fairseq-generate's ``gen_timer`` times: ``task.inference_step(generator, models,
sample)`` on an already collated batch (data loading, collation and detokenization are outside, as there). On a GPU
the timer synchronizes before reading the clock.

Protocol (:func:`run_speed`): every (system, setting) pair is decoded untimed once on a few batches (warm-up), then
``repeats`` rounds follow, each decoding every pair once, in forward order in even rounds and in reverse order in odd
rounds, so that A and B are interleaved (A B C ... C B A ...) and a slow phase of a shared machine hits all systems
alike. Reported: the median over rounds, the min and max, and ratios to a baseline computed *within* each round
(paired) before taking their median.
"""
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .systems import System, forced_lengths


@dataclass(frozen=True)
class Setting:
    """How a system is fed: batch-1 over a fixed subset of sentences (``latency``), or the whole split batched by
    fairseq's iterator with ``--batch-size`` / ``--max-tokens``."""

    name: str
    latency: bool = False
    max_sentences: Optional[int] = None
    max_tokens: Optional[int] = None


def default_settings(batch_size: int = 64, max_tokens: int = 4096) -> List[Setting]:
    return [Setting("batch 1", latency=True, max_sentences=1),
            Setting(f"batch {batch_size}", max_sentences=batch_size),
            Setting(f"max-tokens {max_tokens}", max_tokens=max_tokens)]


# ----------------------------------------------------------------------------------------------------------------
# machine


def fix_threads(threads: int, interop_threads: int = 1) -> Dict[str, object]:
    """Set torch's intra-op (and, if still possible, inter-op) thread counts; return what is in force."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(interop_threads)
    except RuntimeError:  # can only be set once, before any inter-op work
        pass
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> Dict[str, object]:
    info = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": device,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "load_average_1_5_15": tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def matmul_peak(n: int = 1024, repeats: int = 10, device: str = "cpu", dtype=torch.float32) -> Dict[str, float]:
    """The machine's practical matmul throughput: ``torch.matmul`` of two n x n matrices (``2 n^3`` FLOPs), best and
    median GFLOP/s over ``repeats`` timed runs after two warm-up runs, at the current thread count."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b)
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    return {"n": n, "best_gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9}


# ----------------------------------------------------------------------------------------------------------------
# decoding


@dataclass
class DecodeRun:
    seconds: float
    sentences: int
    tokens: int  # output positions emitted (see hypothesis_length)
    forced_tokens: int = 0  # sum of the forced lengths (0 when lengths are free)


def hypothesis_length(tokens: torch.Tensor, generator) -> int:
    """Output positions of a hypothesis, without the generator's fixed slots: ``IterativeRefinementGenerator``
    returns the whole canvas, ``<s>`` and ``</s>`` slots included (a random NAT may even write other tokens there);
    ``SequenceGenerator`` returns the tokens and a final ``</s>``. Padding is already dropped by both."""
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    return max(0, len(tokens) - (2 if isinstance(generator, IterativeRefinementGenerator) else 1))


def decode(system: System, batches: Sequence, force_length: bool, keep_hypotheses: bool = False):
    """Decode ``batches`` with ``system``, timing only ``task.inference_step``. Returns a :class:`DecodeRun` (and,
    with ``keep_hypotheses``, ``{sentence id: best hypothesis dict}``)."""
    dictionary = system.task.target_dictionary
    system.activate()
    total, sentences, tokens, forced, hypotheses = 0.0, 0, 0, 0, {}
    for sample in batches:
        lengths = forced_lengths(sample, dictionary) if force_length else None
        forced += int(lengths.sum()) if lengths is not None else 0
        system.forcer.set(lengths)
        synchronize(system.device)
        t0 = time.perf_counter()
        hypos = system.inference(sample)
        synchronize(system.device)
        total += time.perf_counter() - t0
        sentences += len(hypos)
        tokens += sum(hypothesis_length(h[0]["tokens"], system.generator) for h in hypos)
        if keep_hypotheses:
            for sid, h in zip(sample["id"].tolist(), hypos):
                hypotheses[sid] = h[0]
    system.forcer.set(None)
    run = DecodeRun(total, sentences, tokens, forced)
    return (run, hypotheses) if keep_hypotheses else run


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils import flop_counter

    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_flops():
    """FLOP formula for ``aten._scaled_dot_product_flash_attention_for_cpu`` (the CPU attention kernel, which
    ``FlopCounterMode`` does not know): torch's own formula for the GPU attention kernels."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flop} if op is not None else {}


def count_flops(system: System, batches: Sequence, force_length: bool) -> float:
    """Floating-point operations of decoding ``batches`` (``torch.utils.flop_counter.FlopCounterMode``: matrix
    multiplications and attention, 2 FLOPs per multiply-add; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_flops()) as counter:
        decode(system, batches, force_length)
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------------------
# the protocol


@dataclass
class PairResult:
    system: str
    setting: str
    batches: int
    sentences: int
    tokens: int = 0  # output positions emitted in the last round
    forced_tokens: int = 0  # sum of forced lengths (quick mode)
    seconds: List[float] = field(default_factory=list)  # one per round
    flops: Optional[float] = None  # per sentence

    def ms_per_sentence(self) -> List[float]:
        return [1000.0 * s / self.sentences for s in self.seconds]

    def sentences_per_second(self) -> List[float]:
        return [self.sentences / s for s in self.seconds]


def run_speed(systems: Sequence[System], settings: Sequence[Setting], split: str, latency_ids: Sequence[int],
              repeats: int, warmup_batches: int, force_length: bool, flop_settings: Sequence[str] = (), log=print,
              after_round: Optional[Callable[[int], None]] = None,
              throughput_batches: Optional[int] = None) -> Dict[tuple, PairResult]:
    """Time every (system, setting) pair ``repeats`` times, interleaved; returns ``{(system name, setting name):
    PairResult}``. ``latency_ids``: the sentences decoded one at a time by latency settings. FLOPs per sentence are
    counted (untimed, once) for the settings named in ``flop_settings``. ``after_round(r)`` runs after each round
    (the benchmark re-measures the matmul peak there, so that the peak is sampled across the run as well).
    ``throughput_batches``: time the throughput settings on that many of their batches, spread evenly over the
    length-sorted batch list (default: every batch)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    pairs, batches = [], {}
    for setting in settings:
        for system in systems:
            key = (system.name, setting.name)
            if setting.latency:
                batches[key] = system.batches_by_ids(split, latency_ids)
            else:
                batches[key] = spread_batches(system.batches(split, setting.max_tokens, setting.max_sentences),
                                              throughput_batches)
            pairs.append((system, setting))
    results = {}
    for system, setting in pairs:
        key = (system.name, setting.name)
        decode(system, batches[key][:warmup_batches], force_length)  # warm-up, untimed
        results[key] = PairResult(system.name, setting.name, len(batches[key]),
                                  sum(len(b["id"]) for b in batches[key]))
    for r in range(repeats):
        order = pairs if r % 2 == 0 else pairs[::-1]
        t0 = time.perf_counter()
        for system, setting in order:
            key = (system.name, setting.name)
            run = decode(system, batches[key], force_length)
            results[key].seconds.append(run.seconds)
            results[key].tokens, results[key].forced_tokens = run.tokens, run.forced_tokens
        log(f"round {r + 1}/{repeats} done in {time.perf_counter() - t0:.1f} s")
        if after_round is not None:
            after_round(r)
    t0 = time.perf_counter()
    for system, setting in pairs:
        if setting.name in flop_settings:
            key = (system.name, setting.name)
            results[key].flops = count_flops(system, batches[key], force_length) / results[key].sentences
    if flop_settings:
        log(f"FLOPs counted in {time.perf_counter() - t0:.1f} s")
    return results


def paired_ratio(results: Dict[tuple, PairResult], system: str, baseline: str, setting: str,
                 higher_is_better: bool = False) -> Optional[float]:
    """Median over rounds of ``system / baseline`` per-sentence time (``higher_is_better=False``) or throughput,
    each round's ratio computed from that round's two timings."""
    a, b = results.get((system, setting)), results.get((baseline, setting))
    if a is None or b is None:
        return None
    if higher_is_better:
        ratios = [x / y for x, y in zip(a.sentences_per_second(), b.sentences_per_second())]
    else:
        ratios = [x / y for x, y in zip(a.ms_per_sentence(), b.ms_per_sentence())]
    return statistics.median(ratios)


def spread_batches(batches: List, k: Optional[int]) -> List:
    """``k`` of ``batches`` spread evenly over the list (fairseq's iterator sorts them by length, so the subset keeps
    short and long sentences); all of them when ``k`` is None or not smaller."""
    if k is None or k >= len(batches):
        return batches
    if k < 1:
        raise ValueError(f"throughput batches must be >= 1, got {k}")
    return [batches[i] for i in spread_ids(len(batches), k)]


def spread_ids(n_sentences: int, k: int) -> List[int]:
    """``k`` sentence ids spread evenly over ``0 .. n_sentences - 1`` (all of them if ``k >= n_sentences``)."""
    if k >= n_sentences:
        return list(range(n_sentences))
    return sorted({round(i * (n_sentences - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
