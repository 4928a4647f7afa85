"""Follows a user's notifications over gRPC with the generated Python client.

The example a Python backend or tool starts from: it uses the modules this
distribution generates from proto/ (``slop.auth.v1``,
``slop.notification.v1``) and the stock ``grpcio``.

1. Signs a new user up and in (``AuthService/Register``, ``Login``).
2. Subscribes to that user's own channel (``NotificationService/Subscribe``,
   server streaming, with ``authorization: Bearer <access token>``).
3. Once the stream confirms the subscription, publishes an event to the user
   as a backend service (``Publish`` with ``authorization: Bearer <service
   key>``, a key of the server's ``SERVICE_KEYS``).
4. Prints the event as the stream delivers it, and exits.

Exit status: 0 when the published event arrived, 1 when the stream ended or
timed out before it did, 2 when a call failed (its gRPC status code and
message go to stderr).

    python -m slop_client.notifications --target 127.0.0.1:3000 --service-key <secret>
    SLOP_SERVICE_KEY=<secret> slop-notifications --target 127.0.0.1:3000
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2  # googleapis-common-protos

from slop.auth.v1 import auth_pb2, auth_pb2_grpc
from slop.notification.v1 import notification_pb2, notification_pb2_grpc

# What this example publishes and waits for.
EVENT_TYPE = "example.hello"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sign a user in, follow their notifications over gRPC, and publish "
        "one to them as a backend service.",
    )
    parser.add_argument(
        "--target", default="127.0.0.1:3000", help="host:port of the server (default: %(default)s)"
    )
    parser.add_argument(
        "--service-key",
        default=os.environ.get("SLOP_SERVICE_KEY"),
        help="a secret of the server's SERVICE_KEYS, to publish with (default: $SLOP_SERVICE_KEY)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds each call, and the whole stream, may take (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.service_key:
        parser.error("--service-key (or SLOP_SERVICE_KEY) is required: only services publish")
    return args


def bearer(token: str) -> list[tuple[str, str]]:
    """Call metadata with the credentials the server reads."""
    return [("authorization", f"Bearer {token}")]


def run(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.target) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        notifications = notification_pb2_grpc.NotificationServiceStub(channel)

        email = f"python-example-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(18)
        auth.Register(
            auth_pb2.RegisterRequest(email=email, password=password, display_name="Python example"),
            timeout=args.timeout,
        )
        login = auth.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=args.timeout)
        print(f"signed in as {email}: user {login.user.id}, session {login.session_id}")

        # An empty request follows the caller's own channel, every namespace.
        stream = notifications.Subscribe(
            notification_pb2.SubscribeRequest(),
            metadata=bearer(login.tokens.access_token),
            timeout=args.timeout,
        )
        try:
            for message in stream:
                kind = message.WhichOneof("message")
                if kind == "subscribed":
                    subscribed = message.subscribed
                    print(
                        f"subscribed to {subscribed.channel} at offset {subscribed.position.offset}"
                    )
                    payload = struct_pb2.Struct()
                    payload.update({"text": "hello from Python"})
                    published = notifications.Publish(
                        notification_pb2.PublishRequest(
                            channels=[subscribed.channel], type=EVENT_TYPE, payload=payload
                        ),
                        metadata=bearer(args.service_key),
                        timeout=args.timeout,
                    )
                    print(f"published at offset {published.events[0].position.offset}")
                elif kind == "event" and message.event.type == EVENT_TYPE:
                    event = message.event
                    payload = json_format.MessageToJson(event.payload, indent=None)
                    print(f"event {event.type} on {event.channel} at offset {event.offset}: {payload}")
                    return 0
        finally:
            stream.cancel()
        print("error: the stream ended before the event came", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            print(f"error: no event within {args.timeout} s", file=sys.stderr)
            return 1
        reason = error_reason(error)
        suffix = f" (reason {reason})" if reason else ""
        print(f"error: {error.code().name}: {error.details()}{suffix}", file=sys.stderr)
        return 2


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason of a failed call: the server sends a
    google.rpc.Status in the `grpc-status-details-bin` trailer, whose details
    hold an ErrorInfo for every error (see docs and proto/google/rpc)."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    return None


if __name__ == "__main__":
    sys.exit(main())
