"""One exception type for every error a user can act on; the CLI prints it without a traceback."""


class FlowError(Exception):
    """A failure the user can fix; the message says what to do. ``exit_code`` is the CLI's."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class VerificationError(FlowError):
    """The hardware did not compute what the reference computes."""

    exit_code = 3


class ToolError(FlowError):
    """An open tool (yosys, nextpnr) failed or ran past its time limit: a measurement that was not made. A build
    whose simulation already verified it lands without that figure, its report saying why."""
