"""Overlapping batches at once: no failed row, no duplicate, no lost write.

Each thread writes its own attribute key, so attributes merged by one batch
must survive every other thread's batches: a lost update shows as a key
whose value is not the last one its thread sent."""

import random
import threading

from tests.support import post_bulk, stored_contacts

THREADS = 4
BATCHES_PER_THREAD = 8
IDENTITIES = 300


def test_overlapping_concurrent_batches_all_succeed(make_app, headers, db, tenant):
    # Two attempts must do: a retry holds the tenant's other batches off, so it
    # cannot lose the same race again, however often the first attempts collide.
    app = make_app(DB_POOL_MAX=THREADS + 2, TX_ATTEMPTS=2)
    errors: list[str] = []
    last_sent: dict[tuple[int, str], int] = {}  # (thread, externalId) -> its last batch number
    start = threading.Barrier(THREADS)

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        client = app.test_client()
        start.wait()
        for batch in range(BATCHES_PER_THREAD):
            picked = rng.sample(range(IDENTITIES), 150)
            contacts = [{"externalId": f"crm-{i}",
                         "email": f"User{i}@Example.com" if rng.random() < 0.5 else f"user{i}@example.com",
                         "attributes": {f"w{seed}": batch}}
                        for i in picked]
            last_sent.update({(seed, c["externalId"]): batch for c in contacts})
            response = post_bulk(client, headers, contacts)
            data = response.get_json().get("data") if response.status_code == 200 else None
            if data is None or data["failedCount"] != 0:
                errors.append(f"{response.status_code}: {response.get_json()}")

    run_senders(sender)
    assert errors == []

    stored = stored_contacts(db, tenant["id"])
    external_ids = [c["external_id"] for c in stored]
    assert len(external_ids) == len(set(external_ids))
    assert len({c["email"] for c in stored}) == len(stored)
    assert all(c["email"] == f"user{c['external_id'][4:]}@example.com" for c in stored)
    assert len(stored) <= IDENTITIES
    attributes = {c["external_id"]: c["attributes"] for c in stored}
    lost = {key: batch for key, batch in last_sent.items()
            if attributes[key[1]].get(f"w{key[0]}") != batch}
    assert lost == {}


def test_concurrent_batches_adding_and_removing_tags_lose_no_link(make_app, headers, db, tenant):
    """Each thread tags the contacts it picks with its batch's own tag, removes
    its earlier ones, adds the batch's wave tag (new to the catalogue, sent by
    every thread at once, in random case) and attaches the thread's company.
    A lost link shows as a contact missing a tag or a company, a duplicate as
    a second catalogue entry for a name."""
    app = make_app(DB_POOL_MAX=THREADS + 2, TX_ATTEMPTS=2)
    contacts_count = IDENTITIES // 3
    assert post_bulk(app.test_client(), headers,
                     [{"externalId": f"crm-{i}"} for i in range(contacts_count)]).status_code == 200
    errors: list[str] = []
    last_sent: dict[tuple[int, str], int] = {}
    waves: dict[str, set[int]] = {}
    start = threading.Barrier(THREADS)

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        client = app.test_client()
        start.wait()
        for batch in range(BATCHES_PER_THREAD):
            picked = rng.sample(range(contacts_count), 60)
            wave = rng.choice([f"Wave-{batch}", f"WAVE-{batch}", f"wave-{batch}"])
            contacts = [{"externalId": f"crm-{i}",
                         "tags": {"add": [f"t{seed}-{batch}", wave],
                                  "remove": [f"t{seed}-{earlier}" for earlier in range(batch)]},
                         "companies": [{"companyId": f"co-{seed}", "name": f"Company {seed}"}]}
                        for i in picked]
            for contact in contacts:
                last_sent[seed, contact["externalId"]] = batch
                waves.setdefault(contact["externalId"], set()).add(batch)
            response = post_bulk(client, headers, contacts)
            data = response.get_json().get("data") if response.status_code == 200 else None
            if data is None or data["failedCount"] != 0:
                errors.append(f"{response.status_code}: {response.get_json()}")

    run_senders(sender)
    assert errors == []

    expected: dict[str, tuple[set[str], set[str]]] = {}
    for (seed, external_id), batch in last_sent.items():
        tags, companies = expected.setdefault(
            external_id, ({f"wave-{b}" for b in waves[external_id]}, set()))
        tags.add(f"t{seed}-{batch}")
        companies.add(f"co-{seed}")
    actual = {c["external_id"]: ({name.lower() for name in c["tags"]}, set(c["companies"]))
              for c in stored_contacts(db, tenant["id"]) if c["tags"] or c["companies"]}
    assert actual == expected
    names = [row["name"].lower() for row in db.execute("SELECT name FROM tags").fetchall()]
    assert len(names) == len(set(names))
    assert db.execute("SELECT count(*) AS n FROM companies").fetchone()["n"] == THREADS


def test_dry_runs_among_concurrent_writers_write_nothing(make_app, headers, db, tenant):
    """Half the threads write, half send dry runs of the same contacts (with
    their own attribute keys, a tag and new contacts): afterwards not a trace
    of the dry runs, and not one lost write of the writers."""
    app = make_app(DB_POOL_MAX=THREADS + 2, TX_ATTEMPTS=2)
    errors: list[str] = []
    last_sent: dict[tuple[int, str], int] = {}
    start = threading.Barrier(THREADS)

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        client = app.test_client()
        dry = seed % 2 == 1
        start.wait()
        for batch in range(BATCHES_PER_THREAD):
            contacts = [{"externalId": f"crm-{i}", "attributes": {f"w{seed}": batch}}
                        for i in rng.sample(range(IDENTITIES), 150)]
            if dry:
                contacts = [{**c, "tags": {"add": ["dry"], "remove": []}} for c in contacts]
                contacts += [{"externalId": f"dry-{seed}-{batch}"}]
            else:
                last_sent.update({(seed, c["externalId"]): batch for c in contacts})
            response = post_bulk(client, headers, contacts, dryRun=dry)
            data = response.get_json().get("data") if response.status_code == 200 else None
            if data is None or data["failedCount"] != 0:
                errors.append(f"{response.status_code}: {response.get_json()}")

    run_senders(sender)
    assert errors == []
    stored = stored_contacts(db, tenant["id"])
    assert not any(c["external_id"].startswith("dry-") or c["tags"] for c in stored)
    assert not any(key in c["attributes"] for c in stored for key in ("w1", "w3"))
    assert db.execute("SELECT count(*) AS n FROM tags").fetchone()["n"] == 0
    attributes = {c["external_id"]: c["attributes"] for c in stored}
    lost = {key: batch for key, batch in last_sent.items()
            if attributes[key[1]].get(f"w{key[0]}") != batch}
    assert lost == {}


def run_senders(sender) -> None:
    """Run `sender(seed)` on THREADS threads at once and wait for all of them."""
    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
