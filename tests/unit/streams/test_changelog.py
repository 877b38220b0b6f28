"""Changelog writes: acknowledged counting and the clean-stop guard of local stores."""

import asyncio
from types import SimpleNamespace

from streams import changelog
from streams.changelog import CLEAN_STOP, distrust_unclean, mark_clean, unacknowledged, write_many


def memory_table(sent):
    from faust.stores import memory

    store = memory.Store.__new__(memory.Store)
    store.data = {}
    app = SimpleNamespace(producer=SimpleNamespace(send_soon=sent.append), consumer_generation_id=1)
    acked = []
    return SimpleNamespace(app=app, data=store, changelog_topic="cl", _on_changelog_sent=acked.append), acked


def test_changelog_records_count_as_unacknowledged_until_the_broker_acks(monkeypatch):
    monkeypatch.setattr(changelog, "_pending", 0)
    sent = []
    table, acked = memory_table(sent)

    async def scenario():  # Faust's FutureMessage needs a running event loop, as in a worker
        assert write_many(table, 0, [(b"a", b"1"), (b"b", None)]) == 2
        assert unacknowledged() == 2 and table.data.data == {b"a": b"1"}
        sent[0].message.callback(sent[0])  # the broker acknowledged the first
        assert unacknowledged() == 1 and acked == []
        sent[1].message.callback(sent[1])  # and the last: Faust keeps its offset (one per write)
        assert unacknowledged() == 0 and acked == [sent[1]]

    asyncio.run(scenario())


def test_local_stores_survive_a_clean_stop_and_are_rebuilt_after_an_unclean_one(tmp_path, monkeypatch):
    tables = tmp_path / "v1" / "tables"
    (tables / "account-state-0.db").mkdir(parents=True)
    (tables / "account-state-0.db" / "000001.log").write_bytes(b"state")
    monkeypatch.setattr(changelog, "_pending", 3)  # stopped with records the broker never acknowledged
    assert not mark_clean(tables) and not (tables / CLEAN_STOP).exists()
    assert distrust_unclean(tables) and not tables.exists()  # killed: rebuilt from the changelog
    (tables / "account-state-0.db").mkdir(parents=True)
    monkeypatch.setattr(changelog, "_pending", 0)
    assert mark_clean(tables) and (tables / CLEAN_STOP).exists()
    assert not distrust_unclean(tables) and (tables / "account-state-0.db").is_dir()
    assert not (tables / CLEAN_STOP).exists()  # a crash from here on leaves no mark
    assert distrust_unclean(tables) and not tables.exists()
    assert not distrust_unclean(tables)  # first start: nothing to remove
