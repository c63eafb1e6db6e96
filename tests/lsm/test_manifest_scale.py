"""Checking a manifest edit costs time linear in the edit and the live tables, not
(tables added) x (keyspaces).

Before: each added table was looked up in every keyspace's table map, so replaying the
whole-state edit of a store of 35,000 tables in 5,000 keyspaces -- every open -- made
175 million lookups (an open took 14 s, 4.5 s now), and a flush of thousands of
keyspaces did the same. The lookups are counted here, not timed.
"""

from __future__ import annotations

from typing import Any

import pytest

from banyanstore.lsm.edits import EditError, ManifestState

N = 300


class CountingTables(dict[int, Any]):
    probes = 0

    def __contains__(self, key: object) -> bool:
        CountingTables.probes += 1
        return super().__contains__(key)


def _table(ks: int, file_no: int) -> dict[str, Any]:
    return {"ks": ks, "file": file_no, "size": 100, "smallest": "61", "largest": "62",
            "min_v": 1, "max_v": 1, "entries": 1, "tombstones": 0}


def _state() -> ManifestState:
    state = ManifestState()
    for i in range(1, N + 1):
        state.apply({"add_keyspace": [i, f"k{i}"]})
    state.apply({"add_tables": [_table(i, i) for i in range(1, N + 1)], "next_file": N + 1})
    state.tables = {ks: CountingTables(ts) for ks, ts in state.tables.items()}
    return state


def test_an_edit_adding_a_table_to_every_keyspace_is_not_quadratic() -> None:
    state = _state()
    CountingTables.probes = 0
    state.apply({"add_tables": [_table(i, N + i) for i in range(1, N + 1)],
                 "next_file": 2 * N + 1})
    assert CountingTables.probes <= 4 * N  # was N * (N + 1)
    assert sum(len(ts) for ts in state.tables.values()) == 2 * N


def test_a_table_in_a_second_keyspace_is_still_refused() -> None:
    state = _state()
    edit = {"add_tables": [_table(i, 1 if i == N else N + i) for i in range(1, N + 1)],
            "next_file": 2 * N + 1}  # table 1 is keyspace 1's
    with pytest.raises(EditError, match="second keyspace"):
        state.apply(edit)
    # the same number, removed from its keyspace by the same edit, may move
    edit["remove_tables"] = [[1, 1]]
    state.apply(edit)
    assert 1 in state.tables[N] and 1 not in state.tables[1]


def test_a_name_given_to_a_second_id_is_still_refused() -> None:
    state = _state()
    with pytest.raises(EditError, match="second keyspace"):
        state.apply({"add_keyspace": [N + 1, "k7"]})
    state.apply({"add_keyspace": [7, "k7"]})  # the same id again: no clash
