"""Where the time of a decode goes: matrix work, other tensor operators, and everything outside operators.

:func:`profile_decode` runs one decode under ``torch.profiler`` and splits its wall time into

* **matrix**: self time of the matrix-multiplication and attention operators (:data:`MATRIX_OPS`: ``aten::mm``,
  ``addmm``, ``bmm``, ``baddbmm``, ``linear``, ``matmul``, the fused attention kernels ...). Self time, so that a
  ``linear`` calling ``addmm`` is not counted twice;
* **other ops**: self time of every other ``aten::`` operator (softmax, layer norm, copies, indexing, ...);
* **outside ops**: the rest of the wall time — Python, the generator's bookkeeping (beam search, finalization,
  length handling), the profiler's own overhead, and anything else not inside a tensor operator.

The profiler adds a small cost per operator, so a decode with many small operators (batch-1 AR decoding) looks
somewhat more "outside" under the profiler than it is without it; the split is meant for comparing systems under the
same instrumentation.
"""
import time
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from .speed import synchronize
from .systems import System, forced_lengths

MATRIX_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul", "aten::linear",
    "aten::_addmm_activation", "aten::einsum", "aten::dot", "aten::mv", "aten::addmv",
    "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention", "aten::_scaled_dot_product_attention_math",
})


@dataclass
class ProfileBreakdown:
    wall_s: float  # inference_step time under the profiler
    matrix_s: float
    other_ops_s: float
    sentences: int
    plain_s: float  # the same batches decoded right before, without the profiler
    top_ops: List[Tuple[str, float, int]] = field(default_factory=list)  # (name, self seconds, calls)

    @property
    def outside_s(self) -> float:
        return max(0.0, self.wall_s - self.matrix_s - self.other_ops_s)

    @property
    def outside_matrix_fraction(self) -> float:
        """Fraction of the wall time under the profiler not spent in matrix work (other operators + outside)."""
        return 1.0 - self.matrix_s / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def outside_matrix_fraction_plain(self) -> float:
        """1 - (matrix time under the profiler) / (time of the same decode without the profiler): the profiler's
        per-operator cost removed from the denominator (a lower estimate if matrix ops slow down under it too)."""
        return 1.0 - self.matrix_s / self.plain_s if self.plain_s > 0 else float("nan")

    def summary(self) -> str:
        w = self.wall_s
        return (f"{1000 * w / self.sentences:.1f} ms/sentence under the profiler: "
                f"matrix {100 * self.matrix_s / w:.0f}%, other ops {100 * self.other_ops_s / w:.0f}%, "
                "outside ops (Python, generator bookkeeping) "
                f"{100 * self.outside_s / w:.0f}% -> {100 * self.outside_matrix_fraction:.0f}% outside matrix work; "
                f"without the profiler the same sentences take {1000 * self.plain_s / self.sentences:.1f} ms/sentence, "
                f"of which {100 * self.outside_matrix_fraction_plain:.0f}% outside matrix work")


def profile_decode(system: System, batches: Sequence, force_length: bool, top: int = 8) -> ProfileBreakdown:
    """Decode ``batches`` once under ``torch.profiler`` (CPU activity, plus CUDA on a GPU) and split the time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = system.device.startswith("cuda")
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    dictionary = system.task.target_dictionary
    system.activate()
    lengths = [forced_lengths(b, dictionary) if force_length else None for b in batches]
    system.forcer.set(lengths[0])
    system.inference(batches[0])  # warm-up outside the window
    plain = 0.0
    for sample, length in zip(batches, lengths):  # the same decode without the profiler
        system.forcer.set(length)
        synchronize(system.device)
        t0 = time.perf_counter()
        system.inference(sample)
        synchronize(system.device)
        plain += time.perf_counter() - t0
    wall, sentences = 0.0, 0
    with profile(activities=activities) as prof:
        for sample, length in zip(batches, lengths):  # only inference_step runs inside the timed intervals
            system.forcer.set(length)
            synchronize(system.device)
            t0 = time.perf_counter()
            hypos = system.inference(sample)
            synchronize(system.device)
            wall += time.perf_counter() - t0
            sentences += len(hypos)
    system.forcer.set(None)
    matrix = other = 0.0
    ops = []
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue  # user annotations (e.g. "EnsembleModel: forward_decoder") are Python time, not operators
        self_s = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e6
        ops.append((event.key, self_s, event.count))
        if event.key in MATRIX_OPS:
            matrix += self_s
        else:
            other += self_s
    ops.sort(key=lambda x: -x[1])
    return ProfileBreakdown(wall, matrix, other, sentences, plain, ops[:top])
