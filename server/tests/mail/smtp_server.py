"""A real SMTP server for the mail tests (aiosmtpd, from .tools/venv).

Listens on 127.0.0.1:PORT, plain, with STARTTLS (--starttls) or with TLS
from the first byte (--smtps), optionally requiring AUTH (--auth
user:password, only over TLS). Each message received is written to --out
as one JSON file: the envelope, whether the session was encrypted, who
logged in, the headers, the decoded text body and the raw message. Prints
"ready" on stdout once it accepts connections, then serves until killed.
"""

import argparse
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import threading
import uuid
import warnings

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError as error:
    sys.exit(
        f"aiosmtpd is missing ({error}): run `bash scripts/test.sh`, "
        "which installs it into .tools/venv"
    )


class Recorder:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data
        if isinstance(login, bytes):
            login = login.decode()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("sslcontext") is not None,
            "login": login,
            "headers": {name: str(value) for name, value in message.items()},
            "content_type": message.get_content_type(),
            "charset": message.get_content_charset(),
            "body": message.get_content(),
            "raw": raw.decode("utf-8", "replace"),
        }
        name = f"{uuid.uuid4().hex}.json"
        temporary = os.path.join(self.out, f".{name}")
        with open(temporary, "w") as file:
            json.dump(record, file)
        os.rename(temporary, os.path.join(self.out, name))
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--smtps", action="store_true")
    parser.add_argument("--auth")
    args = parser.parse_args()

    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    options = {}
    if args.smtps:
        options["ssl_context"] = context
    elif args.starttls:
        options["tls_context"] = context
        options["require_starttls"] = True
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, auth_data=auth_data.login if ok else None)

        options["authenticator"] = authenticator
        options["auth_required"] = True
        # With implicit TLS aiosmtpd does not see the session as encrypted,
        # and would not offer AUTH: it is encrypted from the first byte.
        options["auth_require_tls"] = not args.smtps
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    controller = Controller(
        Recorder(args.out), hostname="127.0.0.1", port=args.port, **options
    )
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
