"""Quantizer construction from a config dict (``{"scheme": name, **kwargs}``).

Weight schemes: uniform, lsq, dsq, pot, deepshift, apot, log, pwlq, lqnet.
Activation schemes: uniform, lsq, dsq, qn, pot, apot, log.
Activation defaults depend on the fused ReLU before the quantizer: after a ReLU
unsigned with zero point 0, otherwise unsigned asymmetric (uint8 with a zero
point, ONNX's default); ``signed``/``symmetric`` in the config override them.
"""


def _pop_scheme(cfg):
    if cfg is None:
        return None, {}
    cfg = dict(cfg)
    return cfg.pop("scheme", "uniform"), cfg


def make_weight_quantizer(cfg):
    from .apot import APoTQuantizer
    from .dsq import DSQQuantizer
    from .logq import LogQuantizer
    from .lqnet import LQNetQuantizer
    from .pot import DeepShiftQuantizer, PoTQuantizer
    from .pwlq import PWLQQuantizer
    from .uniform import UniformQuantizer

    scheme, kw = _pop_scheme(cfg)
    if scheme in ("uniform", "lsq", "dsq"):
        kw.setdefault("signed", True)
        kw.setdefault("symmetric", True)
        kw.setdefault("per_channel", True)
        if scheme == "lsq":
            kw["lsq"] = True
        cls = DSQQuantizer if scheme == "dsq" else UniformQuantizer
        return cls(weight=True, ch_axis=0, **kw)
    table = {"pot": PoTQuantizer, "deepshift": DeepShiftQuantizer, "apot": APoTQuantizer,
             "log": LogQuantizer, "pwlq": PWLQQuantizer, "lqnet": LQNetQuantizer}
    if scheme not in table:
        raise ValueError(f"unknown weight scheme {scheme!r}; one of "
                         f"{sorted(table) + ['dsq', 'lsq', 'uniform']}")
    kw.setdefault("signed", True)
    return table[scheme](weight=True, **kw)


def make_act_quantizer(cfg, relu_before=False):
    from .apot import APoTQuantizer
    from .dsq import DSQQuantizer
    from .logq import LogQuantizer
    from .pot import PoTQuantizer
    from .qn import QNActivation
    from .uniform import UniformQuantizer

    scheme, kw = _pop_scheme(cfg)
    if scheme is None:
        return None
    if scheme in ("uniform", "lsq", "dsq"):
        kw.setdefault("signed", False)
        kw.setdefault("symmetric", bool(relu_before))
        if scheme == "lsq":
            kw["lsq"] = True
        cls = DSQQuantizer if scheme == "dsq" else UniformQuantizer
        return cls(weight=False, per_channel=False, **kw)
    table = {"qn": QNActivation, "pot": PoTQuantizer, "apot": APoTQuantizer, "log": LogQuantizer}
    if scheme not in table:
        raise ValueError(f"unknown activation scheme {scheme!r}; one of "
                         f"{sorted(table) + ['dsq', 'lsq', 'uniform']}")
    if scheme != "qn":
        kw.setdefault("signed", False)
    return table[scheme](weight=False, **kw)
