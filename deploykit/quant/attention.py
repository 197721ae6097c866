"""INT8 projections for ``nn.MultiheadAttention``: q/k/v/out as quantized linear layers.

``nn.MultiheadAttention`` keeps its q/k/v projections in one packed ``in_proj_weight`` that
it applies functionally, so a graph that treats it as one module leaves the block's largest
matrix products in float (a ViT then has only its MLP in INT8). :class:`QuantAttention`
computes the same function with four :class:`QuantLayer` projections (INT8 weights per output
channel, quantized inputs and outputs: ONNX Runtime runs them as integer MatMuls) around a
float scaled-dot-product attention (the Q.K^T and softmax(.)V products and the softmax stay
float). It is a leaf of the traced graph; MACs and parameters are counted on the float module
it replaced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import ModelError
from deploykit.quant.modules import ActQuant, QuantLayer
from deploykit.quant.scheme import WEIGHT_QMAX

__all__ = ["QuantAttention", "splittable"]


def splittable(mha: nn.MultiheadAttention) -> bool:
    """Whether ``mha`` is the common form :class:`QuantAttention` reproduces: one embedding
    size for q, k and v, no extra key/value biases, no zero attention, no dropout in eval."""
    return (mha._qkv_same_embed_dim and mha.in_proj_weight is not None
            and mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


class QuantAttention(nn.Module):
    """Fake-quant ``nn.MultiheadAttention`` (eval-mode semantics, no masks).

    Args:
        mha: the float module (copied, not modified); :func:`splittable` must hold.
        make_quant: a fresh activation quantizer for the target.
    """

    def __init__(self, mha: nn.MultiheadAttention, make_quant: Callable[[], ActQuant],
                 per_channel: bool = True, qmax: int = WEIGHT_QMAX):
        super().__init__()
        e = mha.embed_dim
        w, b = mha.in_proj_weight.detach(), mha.in_proj_bias
        parts = [(w[i * e:(i + 1) * e], None if b is None else b.detach()[i * e:(i + 1) * e])
                 for i in range(3)]
        self.q, self.k, self.v = (QuantLayer(_linear(*p), per_channel=per_channel, qmax=qmax)
                                  for p in parts)
        self.out_proj = QuantLayer(_linear(mha.out_proj.weight.detach(),
                                           None if mha.out_proj.bias is None
                                           else mha.out_proj.bias.detach()),
                                   per_channel=per_channel, qmax=qmax)
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        # inputs (one quantizer when query, key and value are the same tensor), the outputs
        # of the projections (so ONNX Runtime fuses DQ -> MatMul -> Q), the attention output
        self.in_q, self.in_k, self.in_v = make_quant(), make_quant(), make_quant()
        self.out_q, self.out_k, self.out_v = make_quant(), make_quant(), make_quant()
        self.attn_out, self.out = make_quant(), make_quant()
        self._float = [mha]   # a list: not a submodule, not in the state dict

    def float_module(self) -> nn.MultiheadAttention:
        """The float module this replaced (for counting MACs and parameters)."""
        return self._float[0]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise ModelError("quantize: attention masks are not supported by the INT8 "
                             "attention; keep the attention block float with "
                             "quantize.keep_float")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        xq = self.in_q(query)
        xk = xq if key is query else self.in_k(key)
        xv = xk if value is key else self.in_v(value)
        q, k, v = self.out_q(self.q(xq)), self.out_k(self.k(xk)), self.out_v(self.v(xv))
        n, lq, e = q.shape
        h = self.num_heads
        heads = [t.reshape(n, t.shape[1], h, e // h).transpose(1, 2) for t in (q, k, v)]
        o = F.scaled_dot_product_attention(*heads)
        o = self.attn_out(o.transpose(1, 2).reshape(n, lq, e))
        o = self.out(self.out_proj(o))
        if not self.batch_first:
            o = o.transpose(0, 1)
        return o, None
