"""Errors that the CLI turns into one line and exit code 2 (the user's input, not our bug)."""


class UsageError(Exception):
    """Bad input from the user: a config key, a path, an image. The message says what, where, how to fix."""

    exit_code = 2


class ConfigError(UsageError):
    """A config value is unknown, of the wrong type or out of range."""

    def __init__(self, source, key, problem):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}")


class DataError(UsageError):
    """A data set file or folder is missing, empty, corrupt or inconsistent."""


class DamagedFile(UsageError):
    """A file keras_ad wrote (weights, a checkpoint) that no longer reads back: truncated, overwritten, moved."""


class TrainingDiverged(UsageError):
    """A loss turned NaN or infinite: the hyper-parameters, not our bug; the last finite checkpoint stays."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line, for one-line reports of a library's long errors."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
