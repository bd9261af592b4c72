"""The README's Python examples run and their assertions hold (the README must stay true)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2, "README lost its Python examples"
    ns = {}
    exec(compile("\n".join(blocks), str(README), "exec"), ns)
    # The examples compute these; check they are what the text says they are.
    assert ns["acc"].dtype.name == "int32" and ns["acc"].shape == (64, 512)
    assert ns["y"].shape == (1, 64, 56, 56) and ns["y"].dtype.name == "uint8"
    assert ns["g"].shape == (1, 64, 1, 1)
    assert ns["acc4"].shape == (64, 512)
    # the quantized-ONNX example
    assert ns["logits"].shape == (2, 10) and ns["logits"].dtype.name == "float32"
    assert ns["model"].inputs[0].shape == ("N", 3, 16, 16)
