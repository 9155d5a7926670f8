"""plugins.runtime.lr_record: the one writer and reader of lr_per_step.csv that all three adapters use."""

import pytest

from plugins.runtime.lr_record import LrRecord, read_lr_record


def test_rows_round_trip_exactly_and_a_resume_keeps_only_the_updates_already_done(tmp_path):
    path = tmp_path / "run" / "lr_per_step.csv"
    record = LrRecord(path, num_groups=2)
    record.start()
    lrs = [(0.1 / 3 * i, 1e-300 * i) for i in range(1, 6)]
    for step, pair in enumerate(lrs, 1):
        record.log(step, pair)
        if step == 3:
            record.flush()
    assert len(record) == 2
    record.flush()
    assert path.read_text().splitlines()[0] == "step,lr_group0,lr_group1"
    steps, groups = read_lr_record(path)
    assert steps == [1, 2, 3, 4, 5] and groups == [[a for a, _ in lrs], [b for _, b in lrs]]  # repr: exact
    resumed = LrRecord(path, num_groups=2)
    resumed.start(done_steps=3)  # a run resumed after update 3 rewrites the rest
    assert read_lr_record(path)[0] == [1, 2, 3]
    LrRecord(path, num_groups=1).start(done_steps=3)  # other param groups: a new file, not a mixed one
    assert read_lr_record(path) == ([], [[]])


def test_processes_that_must_not_write_touch_nothing(tmp_path):
    record = LrRecord(tmp_path / "lr_per_step.csv", num_groups=1, write=False)
    record.start()
    record.log(1, [0.1])
    record.flush()
    assert not (tmp_path / "lr_per_step.csv").exists()


def test_reading_another_file_names_it(tmp_path):
    (tmp_path / "x.csv").write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(ValueError, match=r"x\.csv: not an lr_per_step\.csv"):
        read_lr_record(tmp_path / "x.csv")
