"""Fast-Flow's exceptions: one base class and a few subclasses.

Every message names the file, the field, the value and the fix, so the CLI can print it as is
(`Error: <message>`, exit 1). Library code raises these; it never prints or exits.
"""
from __future__ import annotations


class FastflowError(Exception):
    """Base of every error Fast-Flow reports to a user."""


class ConfigError(FastflowError):
    """A configuration file (pipeline.json, .fastflow/*.yaml) is invalid."""


class PipelineNotFound(FastflowError):
    """No pipeline of that name exists (or it is invalid and cannot be used)."""


class ExecutorError(FastflowError):
    """An executor (host process or Docker) could not start or observe a run."""


class EngineUnavailable(ExecutorError):
    """No Docker engine answers; the message says how to start one or use --local."""


class RepositoryError(FastflowError):
    """A git repository could not be read or written."""


class SecretsError(FastflowError):
    """The secrets file cannot be read, decrypted or trusted."""


class ScaffoldError(FastflowError):
    """`fastflow init` cannot write a new repository there: files are in the way."""


class Invalid(Exception):
    """A value failed its check; the argument is the one-line message (without file/field).

    Internal to validation: checkers raise it, `config.values.Fields` turns it into a `Problem`
    that names the file and field. It never reaches a user as is.
    """
