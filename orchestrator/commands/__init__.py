"""One module per CLI command; each exposes `add_parser(subparsers)` and imports heavy code lazily,
so that board-side commands work without torch."""
from orchestrator.commands import (best, board, data, detect, evaluate, export, import_weights, inspect, schema,
                                   sweep, train)

COMMANDS = [data, import_weights, train, evaluate, export, inspect, detect, board, sweep, best, schema]
