"""The replay's key ring forgets a customer shredded during the replay (R-PLT-4 with
crypto-shredding): a projection rebuilt after the shred must not write their personal fields
back (review finding: the keys are read once, when the replay starts)."""
from __future__ import annotations

import uuid

from services.cli.replay import _ReplayKeyRing


def test_a_subject_shredded_after_the_keys_were_read_is_forgotten(scratch_store):
    kept, shredded = f"cust-{uuid.uuid4().hex}", f"cust-{uuid.uuid4().hex}"
    with scratch_store.pool.connection() as conn:
        for subject in (kept, shredded):
            scratch_store.keyring.data_key(conn, subject, create=True)
        ring = _ReplayKeyRing(scratch_store.keyring.master, conn)
        assert ring.data_key(conn, shredded, create=False) is not None      # opened once, cached

        assert scratch_store.keyring.destroy(conn, shredded)
        assert ring.data_key(conn, shredded, create=False) is not None      # still the read copy
        assert ring.forget_shredded(conn) == 1

        assert ring.data_key(conn, shredded, create=False) is None
        assert ring.data_key(conn, kept, create=False) == scratch_store.keyring.data_key(conn, kept, create=False)
        assert ring.forget_shredded(conn) == 0
