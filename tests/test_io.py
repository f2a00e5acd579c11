"""``bench.io.read_json``: orjson where installed, json otherwise, with the same values either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import io
from bench.errors import BenchInputError

TRICKY = ["0", "-0", "-0.0", "1e23", "9007199254740993", "2.2250738585072014e-308", "5e-324", "4.35",
          "1.7976931348623157e308", "0.30000000000000004", "123456789012345678901234567890e-20", "1e-400"]


@pytest.mark.parametrize("parser", ["orjson", "json"])
def test_values_are_json_modules(tmp_path: Path, parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every number the json module's value and type (floats by their bits), keys repeated (the last wins)."""
    if parser == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(io, "_orjson", None)
    rng = np.random.default_rng(0)
    scale = 10.0 ** rng.integers(-300, 300, 3000)
    numbers = TRICKY + [repr(float(v)) for v in rng.standard_normal(3000) * scale]
    numbers += [f"{x:.{d}f}" for x, d in zip(rng.random(1000) * 1000, rng.integers(0, 20, 1000), strict=True)]
    text = '{"a": 1, "n": [' + ", ".join(numbers) + '], "s": "\\u00e9\\n", "a": [true, null]}'
    path = tmp_path / "x.json"
    path.write_text(text)
    got, expected = io.read_json(path), json.loads(text)
    assert [(type(v), repr(v)) for v in got["n"]] == [(type(v), repr(v)) for v in expected["n"]]
    assert got == expected


def test_what_only_json_reads_and_malformed_files(tmp_path: Path) -> None:
    """NaN / Infinity (not JSON: orjson refuses them) still read; a syntax error names its place."""
    path = tmp_path / "x.json"
    path.write_text('[NaN, Infinity, 1e999]')
    assert [str(v) for v in io.read_json(path)] == ["nan", "inf", "inf"]
    path.write_text('{"a": [1, 2}')
    with pytest.raises(BenchInputError, match="line 1 column 12"):
        io.read_json(path)


@pytest.mark.parametrize("writer", ["orjson", "json"])
def test_json_bytes_values_are_json_safes(writer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict JSON with ``json_safe``'s values either way: NaN/Inf as null, NumPy scalars and arrays unwrapped
    (a float32 as its float64 value), integer keys as strings, other objects through ``default``; an integer
    past 64 bits (orjson refuses it) falls back to json."""
    if writer == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(io, "_orjson", None)
    obj = {"nan": float("nan"), "inf": [float("inf"), -np.inf], "f32": np.float32(0.1), "i": np.int64(-3),
           "b": np.bool_(True), "a": np.array([[0.5, np.nan], [1e-300, 2.0]]), "t": (1, "é"), 7: None,
           "p": Path("/x/y"), "f": [0.1 + 0.2, 5e-324, 1.7976931348623157e308, -0.0]}
    expected = json.loads(json.dumps(io.json_safe(obj), default=str))

    def strict(text: bytes) -> object:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))

    for indent in (True, False):
        text = io.json_bytes(obj, indent=indent, default=str)
        assert text.endswith(b"\n") and (b"\n " in text) == indent
        got = strict(text)
        assert got == expected and repr(got["f"]) == repr(expected["f"])
        assert got["f32"] == float(np.float32(0.1))
    with pytest.raises(TypeError):
        io.json_bytes({"p": Path("/x")})  # no default: not silently a string
    assert strict(io.json_bytes({"big": 2**70, "x": np.float64(1.5)})) == {"big": 2**70, "x": 1.5}
