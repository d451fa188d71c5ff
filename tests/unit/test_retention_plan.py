"""How a retention transaction splits its work (pure: no database)."""

from __future__ import annotations

from pgbridge.retention.sweep import TrimTarget, plan_trims


def test_each_run_is_trimmed_up_to_the_seq_wanted() -> None:
    plan, cut_short = plan_trims([("a", 1, 10), ("b", 4, 9)], {"a": 6, "b": 5}, budget=100)
    assert plan == [TrimTarget("a", 1, 6), TrimTarget("b", 4, 5)]
    assert not cut_short


def test_a_trim_never_goes_past_the_last_seq() -> None:
    plan, _ = plan_trims([("a", 1, 3)], {"a": 10}, budget=100)
    assert plan == [TrimTarget("a", 1, 3)]


def test_runs_with_nothing_left_to_delete_are_skipped() -> None:
    plan, cut_short = plan_trims([("a", 5, 9), ("b", 1, 2)], {"a": 4, "b": 2}, budget=100)
    assert plan == [TrimTarget("b", 1, 2)]
    assert not cut_short


def test_the_budget_caps_one_transaction_and_says_more_is_left() -> None:
    plan, cut_short = plan_trims([("a", 1, 10), ("b", 1, 10)], {"a": 6, "b": 6}, budget=8)
    assert plan == [TrimTarget("a", 1, 6), TrimTarget("b", 1, 2)]
    assert sum(t.count for t in plan) == 8
    assert cut_short


def test_a_spent_budget_leaves_the_remaining_runs_for_the_next_transaction() -> None:
    plan, cut_short = plan_trims([("a", 1, 10), ("b", 1, 10)], {"a": 5, "b": 5}, budget=5)
    assert plan == [TrimTarget("a", 1, 5)]
    assert cut_short
