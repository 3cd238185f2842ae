"""Math: the ``math`` corpus and the 25-class ``math-type`` task.

* ``math`` (corpus) mirrors the paper's DeepMind Mathematics corpus: problems
  from ``mathematics_dataset`` (56 types) plus ``mathgenerator`` (124 generators),
  one ``question\\nanswer`` text each.
* ``math-type`` (task) mirrors MathQA's topic classification: mathgenerator problems
  labelled with one of 25 topics, each topic grouping 2-11 generators.
* ``math-qa`` (generation) is question -> answer, scored by exact match: problems of
  ``MATH_QA_TYPES``, 20 ``mathematics_dataset`` types with one-line answers, drawn from
  another random stream than the corpus.

All share the domain salt and use the problem text as group key, so a problem that
appears in two of them sits in the same split of each (no corpus-train/task-test leak).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from modularevo.data._mathdm import generate_in_subprocess
from modularevo.data.spec import DatasetSpec, register_dataset
from modularevo.utils.seed import derived_seed

logger = logging.getLogger(__name__)

# topic -> mathgenerator function names (generator 110 "stationary_points" is broken upstream).
MATH_TOPICS: dict[str, tuple[str, ...]] = {
    "add_subtract": ("addition", "subtraction", "absolute_difference"),
    "multiply_divide": ("multiplication", "division", "modulo_division"),
    "fractions": (
        "fraction_to_decimal",
        "divide_fractions",
        "fraction_multiplication",
        "compare_fractions",
    ),
    "powers_roots": (
        "square_root",
        "square",
        "cube_root",
        "exponentiation",
        "power_of_powers",
        "quotient_of_power_same_base",
        "quotient_of_power_same_power",
        "surds_comparison",
    ),
    "percentages": (
        "percentage",
        "percentage_difference",
        "percentage_error",
        "profit_loss_percent",
    ),
    "divisibility": (
        "is_prime",
        "is_composite",
        "greatest_common_divisor",
        "lcm",
        "gcd",
        "hcf",
        "prime_factors",
        "common_factors",
        "factors",
    ),
    "number_bases": (
        "binary_complement_1s",
        "decimal_to_binary",
        "binary_to_decimal",
        "binary_to_hex",
        "binary_2s_complement",
        "decimal_to_hexadeci",
        "decimal_to_octal",
        "bcd_to_decimal",
        "decimal_to_bcd",
        "base_conversion",
        "decimal_to_roman_numerals",
    ),
    "sequences": (
        "fibonacci_series",
        "nth_fibonacci_number",
        "geometric_progression",
        "arithmetic_progression_term",
        "arithmetic_progression_sum",
    ),
    "calculus": (
        "power_rule_differentiation",
        "power_rule_integration",
        "trig_differentiation",
        "definite_integral",
    ),
    "averages": ("geometric_mean", "harmonic_mean", "mean_median", "data_summary"),
    "unit_conversion": (
        "celsius_to_fahrenheit",
        "minutes_to_hours",
        "degree_to_rad",
        "radian_to_deg",
    ),
    "complex_numbers": ("complex_to_polar", "multiply_complex_numbers", "complex_quadratic"),
    "probability": (
        "binomial_distribution",
        "dice_sum_probability",
        "conditional_probability",
        "confidence_interval",
    ),
    "combinatorics": ("factorial", "combinations", "permutation"),
    "equations": (
        "basic_algebra",
        "linear_equations",
        "system_of_equations",
        "quadratic_equation",
        "factoring",
        "combine_like_terms",
        "expanding",
        "log",
    ),
    "matrices": (
        "multiply_int_to_22_matrix",
        "matrix_multiplication",
        "invert_matrix",
        "int_matrix_22_determinant",
    ),
    "vectors": ("vector_cross", "vector_dot", "euclidian_norm", "angle_btw_vectors"),
    "coordinate_geometry": (
        "midpoint_of_two_points",
        "distance_two_points",
        "intersection_of_two_lines",
        "equation_of_line_from_two_points",
        "area_of_circle_given_center_and_point",
    ),
    "interest": ("simple_interest", "compound_interest"),
    "angles_triangles": (
        "valid_triangle",
        "third_angle_of_triangle",
        "pythagorean_theorem",
        "angle_regular_polygon",
        "fourth_angle_of_quadrilateral",
        "basic_trigonometry",
        "sum_of_polygon_angles",
        "complementary_and_supplementary_angle",
        "area_of_triangle",
    ),
    "plane_figures": (
        "sector_area",
        "perimeter_of_polygons",
        "circumference",
        "arc_length",
        "area_of_circle",
    ),
    "surface_area": (
        "surface_area_cube",
        "surface_area_cuboid",
        "surface_area_cylinder",
        "surface_area_cone",
        "surface_area_sphere",
        "curved_surface_area_cylinder",
        "surface_area_pyramid",
    ),
    "volume": (
        "volume_cube",
        "volume_cuboid",
        "volume_cylinder",
        "volume_cone",
        "volume_sphere",
        "volume_frustum",
        "volume_hemisphere",
        "volume_pyramid",
    ),
    "logic_sets": ("set_operation", "signum_function", "is_leap_year"),
    "scientific_notation": ("product_of_scientific_notations",),
}


def _mathgenerator_funcs() -> dict[str, Any]:
    import mathgenerator

    return {g[3]: g[2] for g in mathgenerator.getGenList()}


def _problem_text(gen: Any) -> str | None:
    # A few upstream generators fail on rare draws (e.g. percentage_error divides by 0).
    for _ in range(5):
        try:
            problem, solution = gen()
        except Exception:  # third-party generator bugs
            continue
        return f"{str(problem).strip()}\n{str(solution).strip()}"
    return None


def mathgenerator_rows(*, seed: int, per_topic: int, stream: str) -> list[dict[str, Any]]:
    """``per_topic`` problems per topic, round-robin over the topic's generators.

    Each (stream, topic) uses its own seeded random state, so topics do not depend on each
    other and the corpus (stream ``"corpus"``) draws other problems than the task (``"task"``).
    """
    funcs = _mathgenerator_funcs()
    rows = []
    for topic, names in MATH_TOPICS.items():
        s = derived_seed(seed, "mathgenerator", stream, topic)
        random.seed(s)
        np.random.seed(s % 2**32)
        seen: set[str] = set()
        # Some topics have few distinct problems; draw up to 3x until per_topic are distinct.
        for i in range(3 * per_topic):
            text = _problem_text(funcs[names[i % len(names)]])
            if text is not None and text not in seen:
                seen.add(text)
                rows.append({"text": text, "group": text, "label": topic})
            if len(seen) >= per_topic:
                break
    return rows


def build_math_corpus(*, seed: int, dm_per_type: int, mg_per_topic: int) -> list[dict[str, Any]]:
    """Rows of the ``math`` corpus: mathematics_dataset problems + mathgenerator problems."""
    rows = [
        {"text": f"{r['question']}\n{r['answer']}", "group": f"{r['question']}\n{r['answer']}"}
        for r in generate_in_subprocess(seed=seed, n_per_type=dm_per_type)
    ]
    rows += [
        {"text": r["text"], "group": r["group"]}
        for r in mathgenerator_rows(seed=seed, per_topic=mg_per_topic, stream="corpus")
    ]
    return rows


def build_math_type(*, seed: int, per_topic: int) -> list[dict[str, Any]]:
    """Rows of the ``math-type`` task: mathgenerator problems labelled by topic."""
    return mathgenerator_rows(seed=seed, per_topic=per_topic, stream="task")


# mathematics_dataset types whose answers are one short line (a number, a letter, True/False,
# a short expression): exact match is a fair score for them.
MATH_QA_TYPES: tuple[str, ...] = (
    "algebra__linear_1d", "algebra__linear_2d", "algebra__sequence_next_term",
    "arithmetic__add_or_sub", "arithmetic__add_sub_multiple", "arithmetic__div",
    "arithmetic__mixed", "arithmetic__mul", "arithmetic__nearest_integer_root",
    "comparison__closest", "comparison__kth_biggest", "comparison__pair",
    "measurement__conversion", "numbers__div_remainder", "numbers__gcd", "numbers__is_prime",
    "numbers__lcm", "numbers__place_value", "numbers__round_number", "polynomials__evaluate",
)  # fmt: skip


def build_math_qa(*, seed: int, per_type: int) -> list[dict[str, Any]]:
    """Rows of ``math-qa``: question -> answer of ``MATH_QA_TYPES`` (category = the type).

    The group key is ``question\nanswer``, the ``math`` corpus's text of the same problem.
    """
    problems = generate_in_subprocess(
        seed=seed, n_per_type=per_type, stream="task", types=MATH_QA_TYPES
    )
    return [
        {"text": r["question"].strip(), "target": r["answer"].strip(), "label": r["type"],
         "group": f"{r['question']}\n{r['answer']}"}
        for r in problems
    ]  # fmt: skip


register_dataset(
    DatasetSpec(
        name="math",
        kind="corpus",
        domain="math",
        builder=build_math_corpus,
        source=("mathematics-dataset", "mathgenerator"),
        licence="Apache-2.0 (mathematics-dataset), MIT (mathgenerator); generated text",
        description="Generated math problems with answers (DeepMind types + mathgenerator)",
        options={"dm_per_type": 100, "mg_per_topic": 300},
    )
)

register_dataset(
    DatasetSpec(
        name="math-type",
        kind="task",
        domain="math",
        builder=build_math_type,
        source=("mathgenerator",),
        licence="MIT (mathgenerator); generated text",
        description="Math problem -> one of 25 topics (MathQA-style), balanced",
        options={"per_topic": 700},
        train_per_class=400,
        eval_per_class=50,
        label_names=tuple(MATH_TOPICS),
    )
)

register_dataset(
    DatasetSpec(
        name="math-qa",
        kind="generation",
        domain="math",
        builder=build_math_qa,
        source=("mathematics-dataset",),
        licence="Apache-2.0 (mathematics-dataset); generated text",
        description="Math question -> one-line answer (20 DeepMind types), exact match",
        options={"per_type": 300},
        train_per_class=240,
        eval_per_class=25,
    )
)
