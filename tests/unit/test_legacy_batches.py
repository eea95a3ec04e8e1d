"""Legacy (8.x) migration rounds: a new primary gets slots one at a time first, then ever larger rounds."""

from valkey_reconciler.migrate import LEGACY_OPEN_SHARE, LEGACY_SLOT_BATCH, legacy_batch_size


def rounds(total: int, owned: int = 0) -> list[int]:
    out = []
    while sum(out) < total:
        out.append(min(legacy_batch_size(owned + sum(out)), total - sum(out)))
    return out


def test_a_new_primary_gets_single_slots_until_it_owns_enough():
    assert rounds(2730)[:LEGACY_OPEN_SHARE] == [1] * LEGACY_OPEN_SHARE


def test_a_round_never_opens_more_than_a_share_of_what_the_target_owns():
    done = 0
    for size in rounds(2730):
        assert size == 1 or size <= done // LEGACY_OPEN_SHARE
        done += size


def test_rounds_grow_to_the_full_batch_and_stay_few():
    sizes = rounds(2730)
    assert max(sizes) == LEGACY_SLOT_BATCH and sum(sizes) == 2730
    assert len(sizes) < 40


def test_a_target_that_already_owns_slots_starts_with_full_rounds():
    assert rounds(1000, owned=5461)[0] == LEGACY_SLOT_BATCH
