"""The bare reference of the OTP benchmark, HTTP side: a plain Nameko ``@http`` entrypoint that
parses a JSON body, makes one RPC round trip to ``bench_bare_rpc`` and answers JSON — the least
any gateway route does (no session, no schema, no problem mapping). Runs in a process of its
own, like the gateway, on ``GATEWAY_ADDRESS``."""
from __future__ import annotations

import json

from nameko.rpc import RpcProxy
from nameko.web.handlers import http


class BareHttp:
    name = "bench_bare_http"
    bare = RpcProxy("bench_bare_rpc")

    @http("POST", "/bare/verify")
    def verify(self, request):
        body = json.loads(request.get_data() or b"{}")
        result = self.bare.verify(body.get("customer_number"), body.get("otp"))
        return 200, {"Content-Type": "application/json"}, json.dumps(result)
