"""The bounded memo the executor service dedupes attempts and remembers cancels with."""

import pytest

from shared.memo import BoundedMemo


def test_the_oldest_entry_is_forgotten_first():
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("c", 3)
    assert "a" not in memo
    assert (memo.get("b"), memo.get("c"), len(memo)) == (2, 3, 2)


def test_putting_a_key_again_makes_it_the_newest():
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 10)
    memo.put("c", 3)
    assert "b" not in memo
    assert memo.get("a") == 10


def test_a_memo_needs_room():
    with pytest.raises(ValueError, match="at least one"):
        BoundedMemo(0)
