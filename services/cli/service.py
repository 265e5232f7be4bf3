"""`tsunagi service NAME`: run one Nameko service in the foreground (one process, one service).

This is how a single service is deployed and scaled out (docker-compose runs one per
container; start it N times to share the work: RPC and event queues are competing consumers).
"""
from __future__ import annotations

import os

from services.cli import CommandFailed


def register(subparsers) -> None:
    from services import topology

    p = subparsers.add_parser(
        "service", help="run one Nameko service in the foreground (as nameko run --config deploy/nameko.yml)",
        description="Run one Nameko service in the foreground. Known services: "
                    + ", ".join(topology.service_names()) + ".")
    p.add_argument("name", help="service name (e.g. identity) or module (e.g. identity.service)")
    p.set_defaults(func=cmd_service)


def cmd_service(args) -> int:
    from services import runner, topology

    try:
        module = topology.module_for(args.name)
    except KeyError as exc:
        raise CommandFailed(exc.args[0], code=2) from None
    argv = runner.service_argv(module)
    os.chdir(runner.ROOT)
    os.execve(argv[0], argv, runner.child_env())
