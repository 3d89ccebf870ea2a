"""Grouping queued images into pipeline calls (compatible only, bounded, padded for a fixed batch), and
how long a forming batch waits for partners."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.batching import batch_wait_s, partition_compatible, plan_pipeline_calls
from app.jobs import ImageJob


def job(seed, steps=4, size=128, guidance=5.0, negative=None):
    return ImageJob(f"p{seed}", negative, seed, steps, guidance, size, size)


def test_incompatible_jobs_never_share_a_call():
    jobs = [job(0), job(1, steps=8), job(2), job(3, size=64), job(4, guidance=2.0), job(5, negative="blur")]
    calls = plan_pipeline_calls(jobs, batch_size=8, fixed_batch=False)
    assert [call.positions for call in calls] == [(0, 2), (1,), (3,), (4,), (5,)]


def test_edits_never_share_a_call_with_text_to_image_or_another_task_or_strength():
    from dataclasses import replace

    image = object()  # the input image: not part of the key (each job keeps its own)
    text = job(0)
    img2img = replace(job(1), task="img2img", image=image, strength=0.8)
    img2img_other_input = replace(job(2), task="img2img", image=object(), strength=0.8)
    img2img_weaker = replace(job(3), task="img2img", image=image, strength=0.5)
    inpaint = replace(job(4), task="inpaint", image=image, mask=object(), strength=0.8)
    jobs = [text, img2img, img2img_other_input, img2img_weaker, inpaint]
    assert partition_compatible(jobs) == [[0], [1, 2], [3], [4]]


def test_negative_prompts_share_a_call_only_with_other_negative_prompts():
    # "no negative prompt" (zero embeddings) and a given one encode differently in SDXL.
    jobs = [job(0, negative="a"), job(1, negative="b"), job(2)]
    assert partition_compatible(jobs) == [[0, 1], [2]]


def test_groups_are_split_to_the_batch_size():
    calls = plan_pipeline_calls([job(i) for i in range(5)], batch_size=2, fixed_batch=False)
    assert [call.positions for call in calls] == [(0, 1), (2, 3), (4,)]
    assert all(call.padding == 0 for call in calls)


def test_a_fixed_batch_is_padded_by_repeating_the_last_job():
    calls = plan_pipeline_calls([job(0), job(1), job(2)], batch_size=4, fixed_batch=True)
    (call,) = calls
    assert [j.seed for j in call.jobs] == [0, 1, 2, 2]
    assert call.positions == (0, 1, 2) and call.padding == 1


jobs_strategy = st.lists(
    st.builds(
        job,
        st.integers(0, 99),
        st.sampled_from([4, 8]),
        st.sampled_from([64, 128]),
        st.sampled_from([1.0, 5.0]),
        st.sampled_from([None, "x"]),
    ),
    max_size=20,
)


@given(jobs_strategy, st.integers(1, 6), st.booleans())
def test_every_job_is_answered_exactly_once_by_a_compatible_call_of_the_right_size(jobs, batch_size, fixed):
    calls = plan_pipeline_calls(jobs, batch_size, fixed_batch=fixed)
    answered = [position for call in calls for position in call.positions]
    assert sorted(answered) == list(range(len(jobs)))
    for call in calls:
        assert len({j.batch_key for j in call.jobs}) == 1
        assert len(call.jobs) == batch_size if fixed else 1 <= len(call.jobs) <= batch_size
        assert all(call.jobs[i] == jobs[p] for i, p in enumerate(call.positions))


def wait(**overrides) -> float:
    state = dict(images_in_flight=0, images_in_call=0, call_elapsed_s=None, call_seconds={}, batch_size=4, cap_s=0.5)
    state.update(overrides)
    return batch_wait_s(**state)


def test_a_batch_starting_at_an_idle_replica_does_not_wait():
    assert wait(images_in_flight=0, call_seconds={1: 0.1}) == 0.0


def test_a_batch_waits_until_the_running_call_is_expected_to_end():
    assert wait(images_in_flight=2, images_in_call=2, call_elapsed_s=0.05, call_seconds={2: 0.2}) == pytest.approx(0.15)


def test_a_batch_also_waits_for_the_calls_queued_ahead_of_it():
    # A call of 4 has 0.05 s left; 5 more images wait: one full call (0.3 s) and one of 1 (0.1 s).
    assert wait(
        images_in_flight=9, images_in_call=4, call_elapsed_s=0.25, call_seconds={1: 0.1, 4: 0.3}, cap_s=2.0
    ) == pytest.approx(0.45)


def test_the_wait_never_exceeds_the_cap_nor_goes_negative():
    assert wait(images_in_flight=8, images_in_call=4, call_elapsed_s=0.0, call_seconds={4: 3.0}) == 0.5
    assert wait(images_in_flight=1, images_in_call=1, call_elapsed_s=9.0, call_seconds={1: 0.1}) == 0.0


def test_before_any_call_was_timed_a_busy_replica_waits_the_cap():
    assert wait(images_in_flight=3, call_elapsed_s=None) == 0.5


def test_between_calls_a_batch_waits_for_the_batch_queued_to_run_next():
    assert wait(images_in_flight=2, call_elapsed_s=None, call_seconds={2: 0.12}) == pytest.approx(0.12)


def test_an_untimed_call_size_is_estimated_from_the_nearest_timed_one():
    assert wait(
        images_in_flight=3, images_in_call=3, call_elapsed_s=0.0, call_seconds={1: 0.1, 4: 0.4}
    ) == pytest.approx(0.4)
