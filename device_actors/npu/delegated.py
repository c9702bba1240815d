"""What an interpreter actually delegated, read after its delegates modified the graph.

LiteRT keeps the original nodes and appends one DELEGATE node per partition a delegate took
(`ModifyGraphWithDelegate`; the default XNNPACK delegate is applied at `allocate_tensors`). Python
sees no execution plan, so the operators each DELEGATE node replaced are found from its boundary:
walking back from its outputs through the producers of tensors, stopping at its inputs (what the
partition reads from outside: graph inputs, constants, other partitions' outputs).
"""
from __future__ import annotations

from dataclasses import dataclass

DELEGATE_OP = "DELEGATE"


@dataclass(frozen=True)
class Delegation:
    ops: int  # the model's own operators
    delegated_ops: int  # those a delegate took
    partitions: int  # DELEGATE nodes: each runs one partition on the delegate's device


def delegation_of(interpreter) -> Delegation:
    """Count what the delegates of an allocated LiteRT `interpreter` took."""
    details = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only per-node view
    delegates = [d for d in details if d["op_name"] == DELEGATE_OP]
    originals = [d for d in details if d["op_name"] != DELEGATE_OP]
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    inputs_of = {d["index"]: [int(t) for t in d["inputs"] if int(t) >= 0] for d in originals}
    taken: set[int] = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            op = producer.get(tensor)
            if tensor in boundary or op is None or op in taken:
                continue
            taken.add(op)
            stack.extend(inputs_of[op])
    return Delegation(ops=len(originals), delegated_ops=len(taken), partitions=len(delegates))
