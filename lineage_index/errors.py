"""One error hierarchy for lineage-index.

Every failure a user can act on has its own class. Per-model failures are recorded
(as ``records.Failure``) and never abort a run; the CLI maps error kinds to exit codes
in one place (``cli.app``). Messages never contain secrets (tokens, passwords).
"""

from __future__ import annotations

import re


class LineageIndexError(Exception):
    """Base class of every error raised on purpose by lineage-index."""

    exit_code = 1


class UsageError(LineageIndexError):
    """The user asked for something that cannot work (bad flag combination, bad path)."""

    exit_code = 2


class ConfigError(UsageError):
    """A setting (flag or environment variable) is invalid."""


# --- reading models -------------------------------------------------------------------


class ModelReadError(LineageIndexError):
    """A model could not be read. Recorded per model; the run continues."""

    exit_code = 2
    kind = "read_error"


class HeaderError(ModelReadError):
    """A safetensors header is truncated, oversized, malformed or hostile."""

    kind = "bad_header"


class UnsupportedFormatError(ModelReadError):
    """Weights are in a format the tool does not read (pickle, GGUF, ...)."""

    kind = "unsupported_format"


class TooLargeError(ModelReadError):
    """A model would take more of the store than one model may (``sketch.store.MAX_RECORD_BYTES``)."""

    kind = "too_large"


class RepoNotFoundError(ModelReadError):
    """The repository (or revision) does not exist, or is private to someone else."""

    kind = "not_found"


class GatedRepoError(ModelReadError):
    """The repository is gated and the token given has no access."""

    kind = "gated"


class RateLimitedError(ModelReadError):
    """The hub kept answering 429 / 5xx after all retries."""

    kind = "rate_limited"


# --- graph ------------------------------------------------------------------------------


class GraphError(LineageIndexError):
    """Neo4j is unreachable, refused the credentials, or failed a write."""

    exit_code = 5


class Neo4jUnavailableError(GraphError):
    """No Neo4j answers at the resolved URI."""


class ManagedNeo4jError(GraphError):
    """The managed local Neo4j could not be built, started or stopped."""


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<secret>[^/\s@]*)@")
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|password|sig|signature)=)[^&\s]+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    """``text`` with credentials removed: passwords in URLs (``bolt://u:***@h``), secret query
    parameters, Hugging Face tokens and bearer tokens. Every message that may carry a URL or
    a header goes through this before it is printed or stored."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _SECRET_PARAMS.sub(r"\1***", text)
    text = _HF_TOKEN.sub("hf_***", text)
    return _BEARER.sub(r"\1***", text)
