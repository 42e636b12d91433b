"""Head sets: the value type, the top of a score row, and the one random sampler."""

import math

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.circuits.heads import HeadMask, bottom_heads, random_heads, top_heads


def test_head_mask_value_type():
    m = HeadMask.of({3: [2, 1, 2], 0: [5], 1: []})
    assert m.as_dict() == {0: [5], 3: [1, 2]} and len(m) == 3 and m.layers == [0, 3]
    assert m.before(3) == HeadMask.of({0: [5]}) and m.at(3) == (1, 2) and m.at(7) == ()
    assert m.plus(3, [0]) == HeadMask.of({0: [5], 3: [0, 1, 2]})
    assert hash(m) == hash(HeadMask.of({0: (5,), 3: (2, 1)}))


def test_top_heads_breaks_ties_by_index_and_skips_nan():
    assert top_heads([1.0, 3.0, 3.0, math.nan, 2.0], 2) == [1, 2]
    assert top_heads([math.nan, 1.0], 2) == [1]


def test_bottom_heads_mirror_top_heads():
    assert bottom_heads([1.0, 3.0, 3.0, math.nan, 2.0], 2) == [0, 4]
    assert bottom_heads([2.0, 1.0, 1.0, 1.0], 2) == [1, 2]  # ties: the lower index
    assert bottom_heads([math.nan, 1.0], 2) == [1]
    row = [0.3, -1.0, 2.5, 0.0, 7.0, 1.5]
    by_sort = sorted(range(6), key=row.__getitem__)  # an independent ranking: argsort of the scores
    assert bottom_heads(row, 3) == sorted(by_sort[:3]) and top_heads(row, 3) == sorted(by_sort[3:])


def test_random_heads_are_seeded_per_layer_and_avoid_the_excluded():
    a = random_heads(3, range(4), 8, 3)
    assert a == random_heads(3, range(4), 8, 3) != random_heads(4, range(4), 8, 3)
    assert a.layers == [0, 1, 2, 3] and all(len(a.at(la)) == 3 for la in range(4))
    exclude = HeadMask.of({la: range(5) for la in range(4)})
    b = random_heads(3, range(4), 8, 3, exclude)
    assert all(set(b.at(la)) == {5, 6, 7} for la in range(4))
    with pytest.raises(CircuitlabError, match="fewer than n=4"):
        random_heads(0, [0], 8, 4, exclude)
