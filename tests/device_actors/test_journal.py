"""An artifact that keeps killing the actor is refused instead of retried forever."""
from __future__ import annotations

import pytest

from device_actors.journal import ArtifactCrashedBoard, InFlightJournal


def test_attempts_count_up_for_the_same_request_and_restart_for_another(tmp_path):
    journal = InFlightJournal(tmp_path, max_attempts=3)
    assert journal.begin("k1", "model A") == 1
    assert InFlightJournal(tmp_path).begin("k1", "model A") == 2  # the process died; a new actor reads the file
    assert InFlightJournal(tmp_path).begin("k2", "model B") == 1


def test_request_past_the_limit_is_refused_and_the_journal_cleared(tmp_path):
    journal = InFlightJournal(tmp_path, max_attempts=2)
    journal.begin("k1", "model A")
    journal.begin("k1", "model A")
    with pytest.raises(ArtifactCrashedBoard, match="model A ended the board actor 2 times"):
        journal.begin("k1", "model A")
    assert not journal.path.exists()
    assert journal.begin("k1", "model A") == 1


def test_finished_request_leaves_no_trace(tmp_path):
    journal = InFlightJournal(tmp_path)
    journal.begin("k1", "model A")
    journal.end()
    assert journal.begin("k1", "model A") == 1


def test_a_death_with_the_node_is_not_counted_against_the_artifact(tmp_path):
    """The board rebooted (or left and rejoined) while timing: it comes back as a new Ray node."""
    journal = InFlightJournal(tmp_path, max_attempts=2, node_id="node-a")
    journal.begin("k1", "model A")
    assert InFlightJournal(tmp_path, max_attempts=2, node_id="node-a").begin("k1", "model A") == 2
    assert InFlightJournal(tmp_path, max_attempts=2, node_id="node-b").begin("k1", "model A") == 1
    assert InFlightJournal(tmp_path, max_attempts=2, node_id="node-b").begin("k1", "model A") == 2
