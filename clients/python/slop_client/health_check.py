"""Checks slop-server's health over gRPC, the way a probe or service mesh does.

Shows how a Python client talks to the server's standard gRPC health service
(grpc.health.v1.Health, https://github.com/grpc/grpc/blob/master/doc/health-checking.md)
with the stock ``grpcio`` and ``grpcio-health-checking`` packages: it opens an
insecure channel to the server's one port and calls Health/Check once per
service name. The empty name ``""`` is the server as a whole; the server also
reports each of its services (``slop.auth.v1.AuthService``,
``slop.session.v1.SessionService``, ``slop.notification.v1.NotificationService``)
and ``liveness``.

Prints one line per service, ``<name> <STATUS>``, with the name quoted when it
is empty. Exit status: 0 if every service is SERVING, 1 if any is not, 2 if a
call fails (the gRPC status code and details go to stderr).

    python -m slop_client.health_check --target 127.0.0.1:3000
    slop-health-check --target 127.0.0.1:3000 \\
        --service "" --service slop.auth.v1.AuthService
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Call grpc.health.v1.Health/Check on a slop-server and "
        "exit 0 only if every named service is SERVING.",
    )
    parser.add_argument(
        "--target",
        default="127.0.0.1:3000",
        help="host:port of the server (default: %(default)s)",
    )
    parser.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help='service name to check; repeat for several (default: the whole server, "")',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each call (default: %(default)s)",
    )
    return parser.parse_args(argv)


def label(service: str) -> str:
    """How a service name is printed: the empty name as ``""``."""
    return service if service else '""'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    services = args.service if args.service is not None else [""]

    all_serving = True
    with grpc.insecure_channel(args.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services:
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=args.timeout,
                )
            except grpc.RpcError as err:
                print(
                    f"{label(service)}: Health/Check failed: "
                    f"{err.code().name}: {err.details() or '(no details)'}",
                    file=sys.stderr,
                )
                return 2
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            print(f"{label(service)} {status}")
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                all_serving = False

    return 0 if all_serving else 1


if __name__ == "__main__":
    sys.exit(main())
