"""The bare reference of the OTP benchmark, RPC side: one Nameko service with one trivial RPC
method, run by the same launcher and ``deploy/nameko.yml`` as every tsunagi service
(``python -m services.cli._launch --config deploy/nameko.yml tests.bench.bare_rpc``)."""
from __future__ import annotations

from nameko.rpc import rpc


class BareRpc:
    name = "bench_bare_rpc"

    @rpc
    def verify(self, customer_number, code):
        return {"ok": True, "token_serial": "BARE"}
