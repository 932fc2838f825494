from __future__ import annotations

import random

from trustee_rl.curriculum import Curriculum, CurriculumConfig, CurriculumState


def test_level_moves_by_step_on_thresholds_and_stays_in_bounds() -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=10, step=3, low=0.0, high=0.5))
    assert curriculum.update([1.0, 1.0, 0.0]) == 13  # mean 0.67 > 0.5
    assert curriculum.update([0.5, 0.5]) == 13  # mean 0.5 is not above eta_high
    assert curriculum.update([-1.0, 0.0]) == 10  # mean -0.5 < 0
    assert curriculum.update([0.0]) == 10  # mean 0 is not below eta_low
    low = Curriculum(CurriculumConfig(initial_level=2))
    assert low.update([-1.0]) == 1
    high = Curriculum(CurriculumConfig(initial_level=99))
    assert high.update([1.0]) == 100
    assert high.state.history == [100]


def test_fixed_mode_never_moves() -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=40, mode="fixed"))
    curriculum.update([1.0] * 4)
    assert curriculum.level == 40


def test_aspects_follow_level_without_exploration() -> None:
    easy = Curriculum(CurriculumConfig(initial_level=1, epsilon=0)).sample(random.Random(0))
    hard = Curriculum(CurriculumConfig(initial_level=100, epsilon=0)).sample(random.Random(0))
    assert (easy.num_tools, easy.num_calls, easy.num_turns, easy.strictness) == (1, 1, 1, 1)
    assert (easy.prompt_specificity, easy.persona, easy.ambiguity) == (
        "detailed",
        "expert",
        "clear",
    )
    assert (hard.num_tools, hard.num_calls, hard.num_turns, hard.strictness) == (10, 3, 2, 5)
    assert (hard.prompt_specificity, hard.persona, hard.ambiguity) == (
        "generic",
        "novice",
        "highly",
    )


def test_exploration_draws_within_the_bound() -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=50, epsilon=1.0))
    bound = Curriculum(CurriculumConfig(initial_level=50, epsilon=0)).sample(random.Random(0))
    rng = random.Random(7)
    samples = [curriculum.sample(rng) for _ in range(300)]
    assert {s.num_tools for s in samples} == set(range(1, bound.num_tools + 1))
    assert max(s.strictness for s in samples) == bound.strictness
    assert all(s.num_tools >= s.num_calls for s in samples)


def test_sampling_is_seeded() -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=60))
    first = [curriculum.sample(random.Random(3)) for _ in range(5)]
    again = [curriculum.sample(random.Random(3)) for _ in range(5)]
    assert first == again


def test_state_round_trips_with_aspect_stats() -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=30))
    difficulty = curriculum.sample(random.Random(1))
    curriculum.record(difficulty, 1.0, True)
    curriculum.record(difficulty, -1.0, False)
    curriculum.update([1.0, -1.0])
    restored = Curriculum(
        curriculum.config, CurriculumState.model_validate_json(curriculum.state.model_dump_json())
    )
    assert restored.state == curriculum.state
    stats = restored.state.aspect_stats["persona"][difficulty.persona]
    assert (stats.episodes, stats.successes, stats.mean_reward) == (2, 1, 0.0)
