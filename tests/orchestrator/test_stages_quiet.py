"""The sweep's training stage pauses at batch boundaries while a board on its machine times
(`device_actors.quiet`): a real, tiny training in a thread, and a board asking for quiet beside it."""
from __future__ import annotations

import threading
import time

from device_actors import quiet as fence
from orchestrator.config import parse_config
from orchestrator.stages import TrainedModel, TrainSpec, train_student_stream
from trainables.hyper import TrainKnobs

CONFIG = {
    "name": "quiet",
    "data": {"source": "default", "synth": {"train": 48, "val": 8, "size": 64, "seed": 0}},
    "training": {"batch_size": 8, "val_every": 4, "workers": 0},
    "search": {"seed": {"choice": [0]}},
    "fixed": {"epochs": 4, "img_size": 64, "kd_method": "none"},
    "searcher": {"algorithm": "random", "trials": 1},
}


def test_the_training_stage_parks_while_a_board_on_its_machine_times(tmp_path, monkeypatch):
    monkeypatch.setenv(fence.QUIET_DIR_ENV, str(tmp_path / "fence"))
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    spec = TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, torch_threads=1)
    spec.datasets()  # the data set is made before the training registers
    student = TrainKnobs.from_knobs({**CONFIG["fixed"], "seed": 0})
    done: list = []
    training = threading.Thread(target=lambda: done.extend(train_student_stream(student, spec, None, None)))
    training.start()
    deadline = time.monotonic() + 300
    while not (tmp_path / "fence" / "trainers").exists() or not list((tmp_path / "fence" / "trainers").iterdir()):
        assert training.is_alive() and time.monotonic() < deadline, "the training never registered"
        time.sleep(0.01)
    with fence.quiet(300, directory=tmp_path / "fence") as state:
        assert state.quiet and state.paused == 1
        parked_at = len(list((tmp_path / "fence" / "parked").iterdir()))
        time.sleep(0.5)
        assert state.held() and parked_at == 1 and training.is_alive()
    training.join(timeout=600)
    assert isinstance(done[-1], TrainedModel)
    assert not list((tmp_path / "fence" / "trainers").iterdir())  # unregistered when it ended
