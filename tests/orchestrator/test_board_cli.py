"""`python -m orchestrator board ...`: argument handling and user errors (exit 2, one clear line).

The commands against a live cluster (status, bench) are exercised in
tests/device_actors/test_board_cluster.py, which owns the test cluster.
"""
from __future__ import annotations

import socket

import pytest

from orchestrator.cli import build_parser, main

TOKEN = "fedcba9876543210fedcba9876543210"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_board_is_a_command_with_join_status_and_bench():
    parser = build_parser()
    args = parser.parse_args(["board", "join", "--address", "10.0.0.1:6379", "--name", "imx8mp", "--block",
                              "--object-store-memory", "500000000", "--ray-arg=--min-worker-port=20000"])
    assert (args.address, args.name, args.block) == ("10.0.0.1:6379", "imx8mp", True)
    assert args.object_store_memory == 500000000
    assert args.ray_arg == ["--min-worker-port=20000"]
    bench = parser.parse_args(["board", "bench", "m.onnx", "--board", "imx8mp", "--threads", "4", "--emulate"])
    assert (bench.board, bench.threads, bench.emulate, bench.runtime) == ("imx8mp", 4, True, None)
    assert parser.parse_args(["board", "status"]).board_command == "status"


def test_join_requires_address_and_name():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["board", "join", "--name", "imx8mp"])
    assert e.value.code == 2


def test_join_with_malformed_address_exits_2_naming_the_option(capsys):
    assert main(["board", "join", "--address", "imx8mp.local", "--name", "imx8mp"]) == 2
    assert "--address 'imx8mp.local' is not HEAD:PORT" in capsys.readouterr().err


def test_join_with_bad_board_name_exits_2_before_contacting_anything(capsys):
    assert main(["board", "join", "--address", "127.0.0.1:1", "--name", "IMX 8"]) == 2
    assert "board name 'IMX 8' is not allowed" in capsys.readouterr().err


def test_join_to_an_unreachable_head_exits_2_and_never_prints_the_token(capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    port = _closed_port()
    assert main(["board", "join", "--address", f"127.0.0.1:{port}", "--name", "imx8mp"]) == 2
    out = capsys.readouterr()
    assert f"cannot reach the head at 127.0.0.1:{port}" in out.err
    assert TOKEN not in out.out + out.err


def test_bench_of_a_missing_model_exits_2(tmp_path, capsys):
    assert main(["board", "bench", str(tmp_path / "none.onnx"), "--board", "imx8mp"]) == 2
    assert "none.onnx does not exist" in capsys.readouterr().err


def test_bench_rejects_malformed_delegate_option(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    assert main(["board", "bench", str(model), "--board", "imx8mp", "--delegate-option", "novalue"]) == 2
    assert "--delegate-option 'novalue' is not KEY=VALUE" in capsys.readouterr().err
