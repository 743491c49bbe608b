from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import InvalidInput
from core.labels.balance import plan_balance
from core.labels.stats import ClassStats, dataset_stats, entropy, imbalance_ratio
from core.store import DatasetStore
from core.types import ClassSet

TOY = ClassSet("toy", ("bg", "a", "b", "c"), np.zeros((4, 3)))


def test_statistics_match_hand_computed_values():
    m1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 0, 0], [0, 0, 0, 2]], np.uint8)  # a: 1 instance, b: 2
    m2 = np.array([[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 1, 255], [0, 0, 0, 0]], np.uint8)  # c: 1, a: 1
    stats = ClassStats(TOY, include_background=False)
    stats.add(m1)
    stats.add(m2)
    s = stats.summary()
    rows = {r["class"]: r for r in s["per_class"]}
    assert [rows[c]["images"] for c in "abc"] == [2, 1, 1]
    assert [rows[c]["pixels"] for c in "abc"] == [5, 2, 4]
    assert [rows[c]["instances"] for c in "abc"] == [2, 2, 1]
    assert rows["a"]["appearance_frequency"] == 1.0 and rows["b"]["pixel_share"] == pytest.approx(2 / 11, abs=1e-6)
    assert rows["b"]["instance_size_hist"] == {"2^0": 2} and rows["a"]["instance_size_hist"] == {"2^0": 1, "2^2": 1}
    p = np.array([2, 1, 1]) / 4
    assert s["entropy_appearance"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-6)
    assert s["entropy_appearance_normalised"] == pytest.approx(1.5 / math.log2(3), abs=1e-6)
    assert s["imbalance_ratio_appearance"] == 2.0 and s["imbalance_ratio_pixels"] == 2.5
    assert s["ignored_pixels"] == 1 and s["maps"] == 2


def test_entropy_and_ratio_edge_cases():
    assert entropy([5]) == (0.0, 1.0) and entropy([]) == (0.0, 0.0) and entropy([1, 1]) == (1.0, 1.0)
    assert imbalance_ratio([4, 0, 2]) == 2.0 and imbalance_ratio([0]) == 0.0


def test_dataset_stats_stream_the_bundled_samples():
    s = dataset_stats(DatasetStore("assets/samples")).summary()
    rows = {r["class"]: r for r in s["per_class"]}
    assert s["maps"] == 3 and rows["cat"]["images"] == 1 and rows["person"]["instances"] >= 1
    assert s["missing_classes"] == 17


def test_algorithm_1_on_a_hand_built_dataset():
    images = {"x": {0, 1}, "y": {0, 1, 2}, "z": {1, 3}}
    plan = plan_balance(images, TOY, n_balance=3, seed=10)
    doc = plan.to_json()
    # b and c appear once; each is generated from its only holder (fewest classes first) until it reaches 3
    assert doc["quotas"] == {"b": 2, "c": 2}
    assert [s["source"] for s in doc["samples"]] == ["y", "y", "z", "z"]
    assert doc["after"] == {"a": 7, "b": 3, "c": 3} and doc["before"] == {"a": 3, "b": 1, "c": 1}
    assert [s["seed"] for s in doc["samples"]] == [10, 11, 12, 13]
    assert doc["imbalance_ratio_before"] == 3.0 and doc["imbalance_ratio_after"] == pytest.approx(7 / 3, abs=1e-5)


def test_holders_with_fewer_classes_are_used_first_and_cycled():
    images = {"many": {1, 2, 3}, "few": {2}, "mid": {2, 3}}
    images |= {f"a{k}": {1} for k in range(6)} | {f"c{k}": {3} for k in range(4)}  # a: 7 images, c: 6, b: 3
    plan = plan_balance(images, TOY, n_balance=7)
    sources = [s["source"] for s in plan.samples if s["target_class"] == "b"]
    assert sources == ["few", "mid", "many", "few"]  # fewest classes first, then cycling


def test_synthetic_share_mode_sizes_the_budget_and_feeds_the_rarest():
    images = {f"i{k}": {1} for k in range(6)} | {"r": {2}, "s": {3}}
    plan = plan_balance(images, TOY, synthetic_share=0.5)
    assert len(plan.samples) == 8  # 0.5 / (1 - 0.5) * 8 real
    assert plan.after["b"] >= 4 and plan.after["c"] >= 4 and plan.quotas.get("a", 0) <= 1


def test_unreachable_classes_and_bad_targets():
    plan = plan_balance({"x": {1}}, TOY, n_balance=2)
    assert plan.unreachable == ["b", "c"] and plan.after["a"] == 2
    with pytest.raises(InvalidInput, match="exactly one"):
        plan_balance({}, TOY)
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        plan_balance({}, TOY, synthetic_share=1.0)
    with pytest.raises(InvalidInput, match=r"class indices \[9\]"):
        plan_balance({"x": {9}}, TOY, n_balance=1)
