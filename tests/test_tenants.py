"""Tenant isolation: each tenant id has its own state, journal and flushes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime_api_fake import FakeRuntimeApi
from runtime_harness import running

from statefulrt import Context, Flush, FlushPolicy, StatefulHandler


class Notes(StatefulHandler):
    durability = "journal"
    flush_policy = FlushPolicy(every=2)

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[tuple[str | None, list[Any]]] = []

    async def handle(self, event: Any, context: Context) -> Any:
        if "write" in event:
            self.state.buffer("notes").append(event["write"])
            self.state["last"] = event["write"]
        # an attempt to read everything this handler holds
        return {
            "notes": self.state.buffer("notes").peek(),
            "last": self.state.get("last"),
            "same_as_context": context.state is self.state,
        }

    async def flush(self, batch: Flush) -> None:
        self.flushed.append((batch.tenant_id, batch.items("notes")))


def _tenant(name: str) -> dict[str, str]:
    return {"Lambda-Runtime-Aws-Tenant-Id": name}


async def test_tenants_cannot_read_each_others_state(
    api: FakeRuntimeApi, tmp_path: Path
) -> None:
    handler = Notes()
    async with running(api, handler, journal_dir=str(tmp_path)):
        a = await api.answer(api.push({"write": "a-secret"}, headers=_tenant("acme")))
        b = await api.answer(api.push({"read": True}, headers=_tenant("globex")))
        none = await api.answer(api.push({"read": True}))
        a2 = await api.answer(api.push({"read": True}, headers=_tenant("acme")))

    assert a.json() == {
        "notes": ["a-secret"],
        "last": "a-secret",
        "same_as_context": True,
    }
    assert b.json() == {"notes": [], "last": None, "same_as_context": True}
    assert none.json() == {"notes": [], "last": None, "same_as_context": True}
    assert a2.json() == {
        "notes": ["a-secret"],
        "last": "a-secret",
        "same_as_context": True,
    }


async def test_tenants_flush_only_their_own_items(
    api: FakeRuntimeApi, tmp_path: Path
) -> None:
    handler = Notes()
    async with running(api, handler, journal_dir=str(tmp_path)):
        for tenant, note in [("acme", "a1"), ("globex", "g1"), ("acme", "a2")]:
            await api.answer(api.push({"write": note}, headers=_tenant(tenant)))
        await api.answer(api.push({"write": "g2"}, headers=_tenant("globex")))

    assert sorted(handler.flushed, key=lambda f: str(f[0])) == [
        ("acme", ["a1", "a2"]),
        ("globex", ["g1", "g2"]),
    ]
    journals = sorted(p.name for p in tmp_path.glob("*.journal"))
    assert len(journals) == 2
    assert all(name.startswith("statefulrt-test-Notes-tenant-") for name in journals)
    assert not any("acme" in name or "globex" in name for name in journals)


async def test_tenants_idle_journals_close_their_descriptors(
    api: FakeRuntimeApi, tmp_path: Path
) -> None:
    import os

    from statefulrt._runtime import MAX_OPEN_TENANT_JOURNALS

    def open_journal_fds() -> int:
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return sum(str(tmp_path) in target for target in targets)

    handler = Notes()
    async with running(api, handler, journal_dir=str(tmp_path)):
        # each tenant keeps one unflushed note, so each journal holds data
        for n in range(MAX_OPEN_TENANT_JOURNALS + 36):
            await api.answer(api.push({"write": f"n{n}"}, headers=_tenant(f"t{n}")))
        during = open_journal_fds()
        # a tenant whose journal was closed still has its state and journal
        reply = await api.answer(api.push({"write": "back"}, headers=_tenant("t0")))
    assert reply.json()["notes"] == ["n0", "back"]
    assert ("t0", ["n0", "back"]) in handler.flushed
    # the open tenant journals, and the lock of the journal without a tenant
    assert during == MAX_OPEN_TENANT_JOURNALS + 1
