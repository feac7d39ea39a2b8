"""Where a stage's progress lands in a job's percent: a swap's stages share 0-100 in order, a train job is all
training."""

from __future__ import annotations

from storage import JobKind
from worker.context import STAGE_SPANS, stage_percent


def test_a_swaps_stages_follow_each_other_and_a_train_job_fills_the_bar() -> None:
    order = ["scan", "actor", "train", "convert"]
    ends = [stage_percent(JobKind.SWAP, s, 1.0) for s in order]
    starts = [stage_percent(JobKind.SWAP, s, 0.0) for s in order]
    assert starts[0] == 0.0 and ends[-1] == STAGE_SPANS["convert"][1]
    assert all(end == start for end, start in zip(ends, starts[1:], strict=False))  # no gap, no overlap
    assert stage_percent(JobKind.SWAP, "train", 0.5) == 50.0
    assert stage_percent(JobKind.TRAIN, "train", 1.0) == 100.0 and stage_percent(JobKind.TRAIN, "train", 2.0) == 100.0
    assert stage_percent(JobKind.PREPARE, "faces", 0.25) == 25.0
    assert stage_percent(JobKind.SWAP, "unknown", 0.5) is None
