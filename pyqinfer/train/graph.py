"""Graph mode: ``prepare`` for models that are not a chain of modules (residual adds,
concat, global average pooling), through ``torch.fx`` symbolic tracing.

``prepare_graph(model, config)`` traces the model and rewrites the graph in
topological order:

* ``nn.Conv2d`` / ``nn.Linear`` (``call_module``) -> ``QConv2d`` / ``QLinear``, configured by
  module name exactly as the Sequential path (``layers.layer_config``); a ReLU
  (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``.relu()``) that is the layer's only user is
  fused into it;
* ``a + b`` (``operator.add``, ``operator.iadd``, ``torch.add``, ``.add()``) of two tensors ->
  :class:`~pyqinfer.train.qops.QAdd` (config key: the fx node name, e.g. ``"add_1"``), with
  a ReLU that is its only user fused (else the ReLU stays an integer clamp);
* ``nn.AdaptiveAvgPool2d(1)``, ``F.adaptive_avg_pool2d(x, 1)``, ``x.mean((2, 3))`` ->
  :class:`~pyqinfer.train.qops.QGlobalAvgPool`; ``nn.AvgPool2d`` / ``F.avg_pool2d``
  (``ceil_mode=False``) -> :class:`~pyqinfer.train.qops.QAvgPool2d`; ``torch.cat`` ->
  :class:`~pyqinfer.train.qops.QConcat` (config keys: the module name, or the node name
  for functions);
* grid-preserving ops (``MaxPool2d``, ``Flatten`` / ``torch.flatten(x, 1)``, ``Identity``,
  ``Dropout``, an unfused ReLU) pass the quantizer of their input on: a consumer of a
  quantized value shares the producer's output quantizer as its input quantizer
  (no requantization), as the Sequential path does; a consumer of a float value
  (the model input) gets its own input quantizer (config ``"input"``).

Anything else raises :class:`UnsupportedNodeError` naming the node and its op.
BatchNorm must be folded first: :func:`fold_bn_graph`.
"""
import copy
import operator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import QConv2d, QLinear, _QLayer, _set_module, layer_config
from .qops import QAdd, QAvgPool2d, QConcat, QGlobalAvgPool, _QOp

__all__ = ["prepare_graph", "fold_bn_graph", "UnsupportedNodeError", "is_chain_model", "node_kind"]


class UnsupportedNodeError(NotImplementedError):
    """A traced node that graph-mode ``prepare`` / ``export`` cannot quantize."""


SUPPORTED = ("Conv2d, Linear, ReLU (module, F.relu, torch.relu, .relu()), residual add (+, torch.add, "
             ".add()), AdaptiveAvgPool2d(1) / F.adaptive_avg_pool2d(x, 1) / .mean((2, 3)), AvgPool2d, "
             "torch.cat, MaxPool2d, Flatten / torch.flatten(x, 1), Identity, Dropout")

_RELU_F = {F.relu, torch.relu, torch.relu_}
_ADD_F = {operator.add, operator.iadd, torch.add}
_CAT_F = {torch.cat, torch.concat}
_FLATTEN_F = {torch.flatten}
_MAXPOOL_F = {F.max_pool2d, torch.max_pool2d}
_GAP_F = {F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d}
_AVGPOOL_F = {F.avg_pool2d, torch._C._nn.avg_pool2d}
_DROPOUT_F = {F.dropout}


def target_name(node):
    t = node.target
    if node.op == "call_function":
        mod = getattr(t, "__module__", None) or ""
        return f"{mod}.{getattr(t, '__name__', repr(t))}".lstrip(".")
    return str(t)


def describe(node, modules=None):
    """'node 'x' (call_module layer1.conv (Conv2d))'-style text for errors."""
    what = f"{node.op} {target_name(node)}"
    if node.op == "call_module" and modules is not None and node.target in modules:
        what += f" ({type(modules[node.target]).__name__})"
    return f"node {node.name!r} ({what})"


def _arg(node, i, name, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _is_one(v):
    return v == 1 or (isinstance(v, (tuple, list)) and len(v) == 2 and all(t == 1 for t in v))


def _mean_keepdim(node):
    """keepdim if the node is a mean over (2, 3) of a 4-D tensor, else None."""
    dim = _arg(node, 1, "dim")
    if isinstance(dim, int) or dim is None:
        return None
    if sorted(int(d) % 4 for d in dim) != [2, 3] or len(dim) != 2 or node.kwargs.get("dtype") is not None:
        return None
    return bool(_arg(node, 2, "keepdim", False))


def node_kind(node, modules):
    """The role of a traced node: 'input', 'output', 'layer', 'qlayer', 'qop', 'relu', 'add',
    'gap', 'avgpool', 'cat', 'maxpool', 'flatten', 'identity', 'bn', or None (unsupported)."""
    op = node.op
    if op == "placeholder":
        return "input"
    if op == "output":
        return "output"
    if op == "call_module":
        m = modules[node.target]
        if isinstance(m, _QLayer):
            return "qlayer"
        if isinstance(m, _QOp):
            return "qop"
        if isinstance(m, (nn.Conv2d, nn.Linear)) and type(m) in (nn.Conv2d, nn.Linear):
            return "layer"
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, nn.MaxPool2d):
            return "maxpool"
        if isinstance(m, nn.Flatten):
            return "flatten"
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return "identity"
        if isinstance(m, nn.AdaptiveAvgPool2d) and _is_one(m.output_size):
            return "gap"
        if isinstance(m, nn.AvgPool2d) and not m.ceil_mode and m.divisor_override is None:
            return "avgpool"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "bn"
        return None
    if op == "call_function":
        t = node.target
        if t in _RELU_F:
            return "relu"
        if t in _ADD_F:
            ok = len(node.args) == 2 and all(isinstance(a, torch.fx.Node) for a in node.args) and \
                node.kwargs.get("alpha", 1) == 1 and "out" not in node.kwargs
            return "add" if ok else None
        if t in _CAT_F:
            xs = _arg(node, 0, "tensors")
            return "cat" if isinstance(xs, (list, tuple)) and xs and \
                all(isinstance(a, torch.fx.Node) for a in xs) else None
        if t in _FLATTEN_F:
            return "flatten" if _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1 else None
        if t in _MAXPOOL_F:
            return "maxpool" if not _arg(node, 6, "return_indices", False) else None
        if t in _GAP_F:
            return "gap" if _is_one(_arg(node, 1, "output_size")) else None
        if t in _AVGPOOL_F:
            return "avgpool" if not _arg(node, 4, "ceil_mode", False) and \
                _arg(node, 6, "divisor_override") is None else None
        if t is torch.mean:
            return "gap" if _mean_keepdim(node) is not None else None
        if t in _DROPOUT_F:
            return "identity"
        return None
    if op == "call_method":
        t = node.target
        if t in ("relu", "relu_"):
            return "relu"
        if t in ("add", "add_", "__add__"):
            ok = len(node.args) == 2 and isinstance(node.args[1], torch.fx.Node) and \
                node.kwargs.get("alpha", 1) == 1
            return "add" if ok else None
        if t == "flatten":
            return "flatten" if _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1 else None
        if t == "mean":
            return "gap" if _mean_keepdim(node) is not None else None
        if t == "contiguous":
            return "identity"
        return None
    return None


def is_chain_model(model):
    """True for an nn.Sequential whose containers are all nn.Sequential: registration order is
    execution order, so the order-based (Sequential) path of ``prepare`` applies."""
    if not isinstance(model, nn.Sequential):
        return False
    return all(isinstance(m, nn.Sequential) or not list(m.children()) for m in model.modules())


def _trace(model):
    from torch import fx
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as e:          # torch.fx's errors: data-dependent control flow, ...
        raise UnsupportedNodeError(f"torch.fx could not trace the model ({type(e).__name__}: {e}); graph mode "
                                   f"needs a symbolically traceable forward") from e


def _relu_after(node, modules):
    """The ReLU that is ``node``'s only user, possibly through a chain of single-user nn.Identity
    modules (e.g. a folded BatchNorm, as the Sequential path allows), or None."""
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1 or not users[0].args or users[0].args[0] is not cur:
            return None
        u = users[0]
        if u.op == "call_module" and type(modules.get(u.target)) is nn.Identity:
            cur = u
            continue
        return u if node_kind(u, modules) == "relu" else None


def _call_counts(graph):
    counts = {}
    for n in graph.nodes:
        if n.op == "call_module":
            counts[n.target] = counts.get(n.target, 0) + 1
    return counts


@torch.no_grad()
def fold_bn_graph(model):
    """A ``torch.fx.GraphModule`` of ``model`` with every BatchNorm whose input is a Conv2d /
    Linear used only by it folded into that layer (running statistics, :func:`fold_bn`)."""
    from .layers import fold_bn
    gm = _trace(model)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node_kind(node, modules) != "bn":
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and node_kind(src, modules) == "layer" and len(src.users) == 1
                and _call_counts(gm.graph)[src.target] == 1):
            continue
        _set_module(gm, src.target, fold_bn(modules[src.target], modules[node.target]))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        if node.target not in _call_counts(gm.graph):
            gm.delete_submodule(node.target)
        modules = dict(gm.named_modules())
    gm.graph.lint()
    gm.recompile()
    return gm


def _fresh_name(gm, base):
    name, k = base, 1
    while hasattr(gm, name):
        k += 1
        name = f"{base}_{k}"
    return name


def _check_same_signedness(quants, what):
    s = {bool(getattr(q, "signed", False)) for q in quants}
    if len(s) > 1:
        raise ValueError(f"{what}: its inputs and output mix signed and unsigned activation quantizers; the "
                         f"engine op takes one dtype (set 'signed' alike in the config)")


def prepare_graph(model, config=None, inplace=False):
    """Graph-mode ``prepare`` (see the module docstring). Returns a ``torch.fx.GraphModule``.

    The model itself is never rewritten (the graph module has its own module tree);
    ``inplace=False`` (default) first deep-copies it so that nothing is shared with it."""
    from .registry import make_act_quantizer, make_weight_quantizer

    if not inplace:
        model = copy.deepcopy(model)
    gm = _trace(model)
    graph = gm.graph
    modules = dict(gm.named_modules())
    counts = _call_counts(graph)
    grid = {}          # node -> the quantizer whose grid its value lies on (absent: float)
    removed = set()

    def operand_quant(n, cfg):
        g = grid.get(n)
        return (g, True) if g is not None else (make_act_quantizer(cfg["input"], relu_before=False), False)

    def fuse_relu(node, cfg):
        r = _relu_after(node, modules) if cfg.get("fuse_relu", True) else None
        if r is not None:
            r.replace_all_uses_with(r.args[0])
            graph.erase_node(r)
            removed.add(r)
        return r is not None

    def out_quant(cfg, relu, what):
        if cfg.get("act") is None:
            raise ValueError(f"{what} needs an output quantizer: its config's 'act' must not be None")
        return make_act_quantizer(cfg["act"], relu_before=relu)

    def replace(node, name, mod, args):
        """A new call_module node ``name`` (a fresh submodule) in place of ``node``."""
        gm.add_submodule(name, mod)
        with graph.inserting_before(node):
            new = graph.call_module(name, tuple(args))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        return new

    for node in list(graph.nodes):
        if node in removed:
            continue
        kind = node_kind(node, modules)
        if kind is None:
            raise UnsupportedNodeError(f"{describe(node, modules)} is not supported by prepare's graph mode "
                                       f"(supported: {SUPPORTED})")
        if kind in ("qlayer", "qop"):
            raise ValueError(f"{describe(node, modules)}: the model is already prepared")
        if kind == "bn":
            raise UnsupportedNodeError(f"{describe(node, modules)}: fold BatchNorm into the layer before it first "
                                       f"(pyqinfer.train.fold_bn_graph(model))")
        if node.op == "call_module" and counts.get(node.target, 0) > 1 and kind in ("layer", "gap", "avgpool"):
            raise UnsupportedNodeError(f"{describe(node, modules)}: the module is called {counts[node.target]} times; "
                                       f"each call needs its own quantizers (use one module per call)")
        if kind in ("input", "output"):
            continue
        x = node.args[0] if node.args else None
        if kind == "layer":
            m = modules[node.target]
            cfg = layer_config(config, node.target)
            relu = fuse_relu(node, cfg)
            inq, on_grid = operand_quant(x, cfg)
            outq = None if cfg.get("act") is None else make_act_quantizer(cfg["act"], relu_before=relu)
            cls = QConv2d if isinstance(m, nn.Conv2d) else QLinear
            q = cls.from_float(m, weight_quant=make_weight_quantizer(cfg["weight"]), in_quant=inq, out_quant=outq,
                               activation="relu" if relu else None, requant=cfg.get("requant", "fp32"),
                               acc_bits=cfg.get("acc_bits"))
            q.input_on_grid = on_grid
            q.config = cfg
            _set_module(gm, node.target, q)
            if outq is not None:
                grid[node] = outq
        elif kind in ("relu", "maxpool", "flatten", "identity"):
            if x in grid:           # values on a grid stay on it (ReLU: max with the exact real 0)
                grid[node] = grid[x]
        elif kind == "add":
            a, b = node.args
            name = _fresh_name(gm, node.name)
            cfg = layer_config(config, name)
            relu = fuse_relu(node, cfg)
            qa, ga = operand_quant(a, cfg)
            qb, gb = (qa, ga) if b is a else operand_quant(b, cfg)
            outq = out_quant(cfg, relu, f"the add {name!r}")
            _check_same_signedness([qa, qb, outq], f"the add {name!r}")
            mod = QAdd(qa, qb, outq, [ga, gb], "relu" if relu else None)
            mod.config = cfg
            grid[replace(node, name, mod, (a, b))] = outq
        elif kind in ("gap", "avgpool"):
            if node.op == "call_module":
                name = node.target
            else:
                name = _fresh_name(gm, node.name)
            cfg = layer_config(config, name)
            inq, on_grid = operand_quant(x, cfg)
            outq = out_quant(cfg, False, f"the pool {name!r}")
            _check_same_signedness([inq, outq], f"the pool {name!r}")
            if kind == "gap":
                keep = True if node.op == "call_module" or node.target in _GAP_F else _mean_keepdim(node)
                mod = QGlobalAvgPool(inq, outq, on_grid, keepdim=keep)
            elif node.op == "call_module":
                p = modules[node.target]
                mod = QAvgPool2d(inq, outq, p.kernel_size, p.stride, p.padding, p.count_include_pad, on_grid)
            else:
                mod = QAvgPool2d(inq, outq, _arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                                 _arg(node, 3, "padding", 0), _arg(node, 5, "count_include_pad", True), on_grid)
            mod.config = cfg
            if node.op == "call_module":
                _set_module(gm, node.target, mod)
                node.args, node.kwargs = (x,), {}
                grid[node] = outq
            else:
                grid[replace(node, name, mod, (x,))] = outq
        elif kind == "cat":
            xs = list(_arg(node, 0, "tensors"))
            dim = _arg(node, 1, "dim", 0)
            name = _fresh_name(gm, node.name)
            cfg = layer_config(config, name)
            qs = [operand_quant(t, cfg) for t in xs]
            outq = out_quant(cfg, False, f"the concat {name!r}")
            _check_same_signedness([q for q, _ in qs] + [outq], f"the concat {name!r}")
            mod = QConcat([q for q, _ in qs], outq, dim, [g for _, g in qs])
            mod.config = cfg
            grid[replace(node, name, mod, xs)] = outq
        modules = dict(gm.named_modules())
    graph.lint()
    gm.recompile()
    return gm
