"""The runnable examples of the slop-server Python client.

The client itself is the code generated from the contract, in the packages
``slop.auth.v1``, ``slop.session.v1``, ``slop.notification.v1`` and
``slop.errors.v1`` of this distribution::

    from slop.auth.v1 import auth_pb2, auth_pb2_grpc

The examples run as modules (``python -m slop_client.health_check``,
``python -m slop_client.notifications``) or as the commands
``slop-health-check`` and ``slop-notifications``.
"""

from importlib.metadata import version

__version__ = version("slop-client")
