"""``--autocast-bf16``: bfloat16 mixed precision for the NAR tasks, on the CPU as on a GPU.

fairseq offers ``--bf16`` (the model cast to bfloat16, fp32 master weights), but it implies ``--tpu``: with ``--cpu``
its trainer asks torch_xla for a device and stops (``'NoneType' object has no attribute 'xla_device'``); ``--amp``
autocasts on CUDA only. With ``--autocast-bf16`` the task runs the model's forward passes under
``torch.autocast(device_type, dtype=torch.bfloat16)`` in training, validation and generation:

* matrix products (linear layers, attention) run in bfloat16; weights, gradients and the optimizer stay fp32, so no
  loss scaling is needed and checkpoints are ordinary fp32 ones;
* the model's floating outputs are returned to the criterion as fp32, so that log-softmax, the losses and their
  reductions run in fp32 (under CPU autocast ``log_softmax`` would otherwise stay in bfloat16).

* on the CPU, a training forward (gradients enabled) uses torch's math attention kernel
  (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): the CPU flash-attention kernel's backward is about 2.5x slower
  in bfloat16 than in fp32 (one update of make bench's ``nat_ctc_transformer``: 1.04 s of 8.1 s in it under bf16,
  0.19 s in fp32), while the math kernel's matrix products run at bfloat16 speed. Generation keeps the flash kernel,
  which is faster in bfloat16 without a backward.

Whether it is faster depends on the hardware: it needs native bfloat16 arithmetic (CPUs with AVX512-BF16 or AMX,
GPUs from Ampere on); elsewhere bfloat16 matrix products are emulated and much slower than fp32 (see
``scripts/training_cost.py --precision bf16`` to measure).
"""
import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def _fp32(tensor):
    return tensor.float() if torch.is_tensor(tensor) and tensor.dtype == torch.bfloat16 else tensor


def _to_fp32(obj):
    """``obj`` with every bfloat16 tensor in it (nested dicts, lists, tuples, named tuples) cast to fp32."""
    if torch.is_tensor(obj):
        return _fp32(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _to_fp32(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_to_fp32(v) for v in obj]
    if isinstance(obj, tuple):
        values = [_to_fp32(v) for v in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else tuple(values)
    return obj


class _AutocastModel:
    """``model`` as the criterion sees it: its forward under bf16 autocast, bf16 outputs returned as fp32. Every
    other attribute is the model's."""

    def __init__(self, model):
        object.__setattr__(self, "_model", model)

    def __call__(self, *args, **kwargs):
        with bf16_autocast(next(self._model.parameters()).device.type, training=torch.is_grad_enabled()):
            out = self._model(*args, **kwargs)
        return _to_fp32(out)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)


def bf16_autocast(device_type: str, training: bool):
    """``torch.autocast(device_type, bfloat16)``; for a training forward on the CPU also torch's math attention
    kernel, whose backward is faster in bfloat16 than the CPU flash kernel's (module docstring)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type=device_type, dtype=torch.bfloat16))
    if device_type == "cpu" and training:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


@contextlib.contextmanager
def bf16_generation(model):
    """Decoding with ``model`` under bf16 autocast: inside its encoder and decoder bfloat16, at their boundaries fp32
    (forward hooks cast their bf16 outputs), so that a generator's own fp32 state meets fp32 outputs (fairseq's
    ``cmlm_transformer.forward_decoder`` scatters decoder scores into fp32 ``output_scores``: with bf16 scores it
    stops with a dtype error)."""
    hooks = [m.register_forward_hook(lambda module, inputs, output: _to_fp32(output))
             for m in (getattr(model, "encoder", None), getattr(model, "decoder", None))
             if isinstance(m, torch.nn.Module)]
    try:
        with bf16_autocast(next(model.parameters()).device.type, training=False):
            yield
    finally:
        for hook in hooks:
            hook.remove()


class AutocastMixin:
    """Adds ``--autocast-bf16`` (a bool ``autocast_bf16`` field of the task's config) to a fairseq task."""

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if not self.cfg.autocast_bf16:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        # the forward (inside the criterion) is autocast; the backward follows the forward's dtypes
        return super().train_step(sample, _AutocastModel(model), criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion, **kwargs):
        if not self.cfg.autocast_bf16:
            return super().valid_step(sample, model, criterion, **kwargs)
        with bf16_generation(model):  # also the validation BLEU's decoding
            return super().valid_step(sample, _AutocastModel(model), criterion, **kwargs)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        if not self.cfg.autocast_bf16:
            return super().inference_step(generator, models, sample, prefix_tokens, constraints)
        with bf16_generation(models[0]):
            return super().inference_step(generator, models, sample, prefix_tokens, constraints)
