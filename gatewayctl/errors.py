"""The one exception type gatewayctl shows to a technician: a message that says what went
wrong and what to do next. The CLI prints it without a traceback."""


class GatewayctlError(Exception):
    """A failure the technician can act on; str(e) is the whole message."""

    exit_code = 1
