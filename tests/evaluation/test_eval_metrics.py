import pytest

from modularevo.errors import InputError
from modularevo.evaluation import accuracy, macro_f1, normalized_score, per_class_f1


def test_accuracy_hand_checked():
    assert accuracy([0, 1, 1, 2], [0, 1, 0, 2]) == 0.75
    assert accuracy([3], [3]) == 1.0
    assert accuracy([1, 1], [0, 0]) == 0.0


def test_per_class_and_macro_f1_hand_checked():
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: 1
    y_true, y_pred = [0, 1, 1, 2], [0, 1, 0, 2]
    f1 = per_class_f1(y_true, y_pred)
    assert f1 == pytest.approx({0: 2 / 3, 1: 2 / 3, 2: 1.0})
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_counts_listed_absent_classes_as_zero():
    # Only classes 0/1 occur; with labels=[0,1,2] class 2 scores 0 and lowers the mean.
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 1, 0]
    seen = macro_f1(y_true, y_pred)  # class 0: 4/5, class 1: 2/3
    assert seen == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1(y_true, y_pred, labels=[0, 1, 2]) == pytest.approx((0.8 + 2 / 3) / 3)


def test_macro_f1_penalises_majority_guessing_unlike_accuracy():
    y_true = [0] * 9 + [1]
    y_pred = [0] * 10
    assert accuracy(y_true, y_pred) == 0.9
    # class 0: tp 9, fp 1 -> 18/19; class 1: 0
    assert macro_f1(y_true, y_pred) == pytest.approx((18 / 19) / 2)


def test_normalized_score_hand_checked():
    merged, individual = {"a": 0.9, "b": 0.6}, {"a": 1.0, "b": 0.8}
    assert normalized_score(merged, individual) == pytest.approx(82.5)
    assert normalized_score(merged, individual, percent=False) == pytest.approx(0.825)
    assert normalized_score(individual, individual) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: accuracy([0, 1], [0]), "one prediction per example"),
        (lambda: accuracy([], []), "empty"),
        (lambda: macro_f1([0], [0, 1]), "one prediction"),
        (lambda: normalized_score({"a": 1.0}, {"b": 1.0}), "same non-empty set"),
        (lambda: normalized_score({"a": 1.0}, {"a": 0.0}), "<= 0"),
    ],
)
def test_metric_errors_are_input_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()
