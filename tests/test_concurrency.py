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

    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
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
