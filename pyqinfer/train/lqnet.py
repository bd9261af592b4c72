"""LQ-Net's learned quantizer basis (Zhang et al., ECCV 2018, arXiv 1807.10029), weights,
with the levels rounded onto an integer codebook so the engine runs them exactly.

Levels of a K-bit LQ-Net quantizer (per output channel): ``{v^T e : e in {-1, +1}^K}``
for a learned basis ``v`` (K values). A weight is encoded to the nearest level;
the basis is learned by the paper's QEM step during training forward passes:
with the encodings B (N x K, entries +-1) of the channel's weights w,
``v* = (B^T B)^-1 B^T w`` (least squares), moved into v with a moving average
(``momentum``, 0.9 as the paper). Init: ``v_i = 2^i c``, ``c = max|w| / (2^K - 1)``
(a uniform grid). Gradient: identity STE.

Integer codebook (the engine form): every forward uses the basis rounded onto
integers, ``v_int = rne(v / s)``, ``s = sum|v| / Q`` with ``Q = 2^(codebook_bits-1) - 1``
(default 127), so every level is ``s * (v_int^T e)``, an integer in [-Q, Q] times
the channel scale s (float32): integer weights ``v_int^T e`` (int8 by default)
and per-channel scale s. Training and eval use the same rounded levels.
"""
from itertools import product

import torch

from .base import Quantizer, WeightPart


class LQNetQuantizer(Quantizer):
    """LQ-Net weights, per output channel (see the module docstring)."""

    scheme = "lqnet"

    def __init__(self, bits=2, signed=True, weight=True, codebook_bits=8, momentum=0.9, **_):
        super().__init__()
        if not (signed and weight):
            raise ValueError("LQNetQuantizer quantizes (signed) weights only")
        self.bits = int(bits)
        if not 1 <= self.bits <= 4:
            raise ValueError(f"LQ-Net bits (basis size K) must be in [1, 4], got {bits}")
        self.Q = 2 ** (int(codebook_bits) - 1) - 1
        self.codebook_bits = int(codebook_bits)
        self.momentum = float(momentum)
        self.register_buffer("basis", torch.zeros(0, self.bits, dtype=torch.float64))
        self.register_buffer("E", torch.tensor(list(product((-1.0, 1.0), repeat=self.bits)),
                                                dtype=torch.float64))          # [2^K, K]

    def _init(self, w2):
        c = w2.abs().max(1).values / (2 ** self.bits - 1)
        self.basis = c.reshape(-1, 1) * (2.0 ** torch.arange(self.bits, dtype=torch.float64))

    def rounded_basis(self):
        """(v_int [OC, K] float64 integers, s [OC] float32)."""
        s = (self.basis.abs().sum(1) / self.Q).to(torch.float32)
        s = torch.where(s > 0, s, torch.ones_like(s))
        return torch.round(self.basis / s.to(torch.float64).reshape(-1, 1)), s

    def _encode(self, w2):
        v_int, s = self.rounded_basis()
        lv = v_int @ self.E.t()                                  # [OC, 2^K] integer levels
        real = lv * s.to(torch.float64).reshape(-1, 1)
        idx = torch.argmin((w2.unsqueeze(2) - real.unsqueeze(1)).abs(), dim=2)   # [OC, N]
        return idx, torch.gather(lv, 1, idx), s

    @torch.no_grad()
    def _qem(self, w2):
        idx, _, _ = self._encode(w2)
        B = self.E[idx]                                          # [OC, N, K]
        BtB = B.transpose(1, 2) @ B + 1e-9 * torch.eye(self.bits, dtype=torch.float64)
        v = torch.linalg.solve(BtB, (B.transpose(1, 2) @ w2.unsqueeze(2))).squeeze(2)
        self.basis = self.momentum * self.basis + (1 - self.momentum) * v

    @torch.no_grad()
    def integer_parts(self, w):
        w2 = w.detach().to(torch.float64).reshape(w.shape[0], -1)
        if self.basis.shape[0] != w.shape[0]:
            self._init(w2)
        _, q, s = self._encode(w2)
        return [WeightPart(q.reshape(w.shape), s, torch.zeros(w.shape[0], dtype=torch.float64),
                           self.codebook_bits, True, {"basis_int": self.rounded_basis()[0]})]

    def forward(self, w):
        if self.calibrating:
            return w
        w2 = w.detach().to(torch.float64).reshape(w.shape[0], -1)
        if self.basis.shape[0] != w.shape[0]:
            self._init(w2)
        if self.training:
            self._qem(w2)
        part = self.integer_parts(w)[0]
        w_hat = part.scale.reshape([-1] + [1] * (w.dim() - 1)) * part.w_int.to(torch.float32)
        return w + (w_hat - w).detach()

    def int_repr(self, w):
        return self.integer_parts(w)[0].w_int

    def qparams(self):
        v_int, s = self.rounded_basis()
        return {"scheme": self.scheme, "bits": self.bits, "signed": True, "dtype": "int8",
                "ch_axis": 0, "basis_int": v_int, "scale": s, "codebook_bits": self.codebook_bits}
